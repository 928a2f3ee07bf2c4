//! The `flowc` binary as a user runs it: exit statuses, text and JSON.

use std::process::Command;

fn flowc(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_flowc"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn check_valid_flow_exits_0_with_table() {
    let (code, out, _) = flowc(&["check", "flows/realnvp_cifar10.flow"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("latents 1536 + 1536 = 3072 = input 3072"),
        "{out}"
    );
}

#[test]
fn check_json_has_the_language_fields() {
    let (code, out, _) = flowc(&["check", "flows/realnvp_cifar10.flow", "--format", "json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["flow"], "realnvp_cifar10");
    assert_eq!(v["input"], serde_json::json!([3, 32, 32]));
    assert_eq!(v["latents"], serde_json::json!([[6, 16, 16], [6, 16, 16]]));
    assert_eq!(v["layers"][0]["op"], "logit");
    assert_eq!(v["layers"][0]["line"], 22);
    assert!(v["parameters"].as_u64().unwrap() > 0);
    assert_eq!(v["diagnostics"], serde_json::json!([]));
}

#[test]
fn check_errors_exit_1_and_json_lists_them() {
    let (code, _, err) = flowc(&["check", "tests/bad/shape_squeeze_odd.flow"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("error[shape]: tests/bad/shape_squeeze_odd.flow:5:5"),
        "{err}"
    );
    let (code, out, _) = flowc(&[
        "check",
        "tests/bad/shape_squeeze_odd.flow",
        "--format",
        "json",
    ]);
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["diagnostics"][0]["code"], "shape");
    assert_eq!(v["diagnostics"][0]["line"], 5);
    assert_eq!(v["diagnostics"][0]["column"], 5);
}

#[test]
fn warnings_keep_exit_0() {
    let (code, _, err) = flowc(&["check", "tests/bad/warn_unbounded.flow"]);
    assert_eq!(code, 0);
    assert!(err.contains("warning[unbounded]"), "{err}");
}

#[test]
fn missing_file_and_bad_usage_exit_2() {
    let (code, _, err) = flowc(&["check", "no/such/file.flow"]);
    assert_eq!(code, 2);
    assert!(err.contains("cannot read no/such/file.flow"), "{err}");
    let (code, _, _) = flowc(&["check"]);
    assert_eq!(code, 2);
    let (code, _, _) = flowc(&["check", "flows/two_moons.flow", "--format", "yaml"]);
    assert_eq!(code, 2);
}

#[test]
fn numeric_check_reports_both_errors_in_json() {
    let (code, out, _) = flowc(&[
        "check",
        "flows/two_moons.flow",
        "--numeric",
        "--format",
        "json",
    ]);
    assert_eq!(code, 0, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let rt = v["numeric"]["roundtrip_max_abs"].as_f64().unwrap();
    let ld = v["numeric"]["logdet_max_rel"].as_f64().unwrap();
    assert!(rt < 1e-4 && ld < 1e-3, "{rt} {ld}");
    let (code, text, _) = flowc(&["check", "flows/realnvp_mnist.flow", "--numeric"]);
    assert_eq!(code, 0);
    assert!(text.contains("numeric check on input 1x4x4"), "{text}");
}

/// `flowc bench --format json` on tiny flows (an image one through the fused
/// conditioner, a vector one): every field, positive rates, the thread
/// count it was given, and the parameter count `check` reports.
#[test]
fn bench_json_has_every_field_with_positive_rates() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("tiny.flow");
    std::fs::write(
        &image,
        "flow tiny { input image(1, 4, 4) prior normal net r = resnet(blocks = 1, features = 4) \
         logit(alpha = 0.05) coupling affine(mask = checkerboard(even), net = r) \
         coupling affine(mask = checkerboard(odd), net = r) }",
    )
    .unwrap();
    let image = image.to_str().unwrap();
    for (file, batch) in [(image, "3"), ("flows/two_moons.flow", "16")] {
        let args = [
            "bench",
            file,
            "--batch",
            batch,
            "--iters",
            "2",
            "--threads",
            "1",
        ];
        let (code, out, err) = flowc(&[&args[..], &["--format", "json"]].concat());
        assert_eq!(code, 0, "{err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["batch"], batch.parse::<u64>().unwrap());
        assert_eq!(v["threads"], 1);
        assert_eq!(v["device"], "cpu");
        for key in [
            "density_per_s",
            "sample_per_s",
            "train_per_s",
            "peak_rss_mib",
        ] {
            let x = v[key].as_f64().unwrap_or(f64::NAN);
            assert!(x.is_finite() && x > 0.0, "{key} = {}", v[key]);
        }
        for what in ["density", "sample", "train"] {
            let median = v[format!("{what}_per_s")].as_f64().unwrap();
            let best = v[format!("{what}_best_per_s")].as_f64().unwrap_or(f64::NAN);
            assert!(
                best.is_finite() && best >= median,
                "{what}: {best} < {median}"
            );
        }
        let (_, checked, _) = flowc(&["check", file, "--format", "json"]);
        let checked: serde_json::Value = serde_json::from_str(&checked).unwrap();
        assert_eq!(v["parameters"], checked["parameters"]);
        assert_eq!(v["flow"], checked["flow"]);
    }
    let (code, _, err) = flowc(&["bench", image, "--batch", "0"]);
    assert_eq!(code, 2, "{err}");
}
