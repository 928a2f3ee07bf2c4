//! `complete`, `encode`, `decode`, `interpolate` and `score` through the
//! binary: round trips, endpoints, agreement with `eval`, and the messages
//! for inputs and masks that do not fit (snapshots, with the help texts).

mod common;
use common::cli::{flowc, write_images, write_npy};

const TINY: &str = "flow tiny {
    input image(1, 4, 4)
    net r = resnet(blocks = 1, features = 8)
    logit(alpha = 0.05)
    coupling affine(mask = checkerboard(even), net = r)
    coupling affine(mask = checkerboard(odd), net = r)
    squeeze
    coupling affine(mask = channel(even), net = r)
    coupling affine(mask = channel(odd), net = r)
}
";

struct Runs {
    dir: tempfile::TempDir,
}

impl Runs {
    /// An image run and a vector run, trained a few steps.
    fn new() -> Runs {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n).display().to_string();
        std::fs::write(dir.path().join("tiny.flow"), TINY).unwrap();
        write_images(&dir.path().join("images.npy"), 60);
        let data = format!("npy:{}", p("images.npy"));
        let (code, _, err) = flowc(&[
            "train",
            &p("tiny.flow"),
            "--data",
            &data,
            "--steps",
            "20",
            "--batch",
            "16",
            "--lr",
            "3e-3",
            "--out",
            &p("img"),
        ]);
        assert_eq!(code, 0, "{err}");
        let (code, _, err) = flowc(&[
            "train",
            "flows/two_moons.flow",
            "--data",
            "toy:two-moons",
            "--steps",
            "30",
            "--batch",
            "64",
            "--out",
            &p("vec"),
        ]);
        assert_eq!(code, 0, "{err}");
        Runs { dir }
    }
    fn p(&self, n: &str) -> String {
        self.dir.path().join(n).display().to_string()
    }
}

/// The payload of a .npy file the commands wrote (header skipped).
fn npy_payload(path: &str) -> (String, Vec<u8>) {
    let bytes = std::fs::read(path).unwrap();
    let len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    (
        String::from_utf8_lossy(&bytes[10..10 + len]).into_owned(),
        bytes[10 + len..].to_vec(),
    )
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

#[test]
fn decode_of_encode_returns_the_input_and_interpolation_ends_at_the_inputs() {
    let r = Runs::new();
    // Images: exactly the 8-bit values.
    let (code, _, err) = flowc(&[
        "encode",
        &r.p("img"),
        "--input",
        &r.p("images.npy"),
        "-o",
        &r.p("z.npy"),
        "--batch",
        "7",
    ]);
    assert_eq!(code, 0, "{err}");
    let (header, z) = npy_payload(&r.p("z.npy"));
    assert!(
        header.contains("'<f4'") && header.contains("(60, 16)"),
        "{header}"
    );
    let (header, logdet) = npy_payload(&r.p("z.logdet.npy"));
    assert!(header.contains("(60, 1)"), "{header}");
    assert!(f32s(&logdet).iter().all(|v| v.is_finite()) && f32s(&z).iter().all(|v| v.is_finite()));
    let (code, _, err) = flowc(&[
        "decode",
        &r.p("img"),
        "--input",
        &r.p("z.npy"),
        "-o",
        &r.p("x.npy"),
    ]);
    assert_eq!(code, 0, "{err}");
    let (_, original) = npy_payload(&r.p("images.npy"));
    let (header, back) = npy_payload(&r.p("x.npy"));
    assert!(
        header.contains("'|u1'") && header.contains("(60, 1, 4, 4)"),
        "{header}"
    );
    assert_eq!(back, original);
    // Vectors: to f32 rounding.
    let pts: Vec<f32> = (0..40)
        .flat_map(|i| [(i as f32 * 0.37).sin() * 2.0, (i as f32 * 0.11).cos()])
        .collect();
    write_npy(
        &r.dir.path().join("pts.npy"),
        "<f4",
        "40, 2",
        &pts.iter()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<u8>>(),
    );
    let (code, _, err) = flowc(&[
        "encode",
        &r.p("vec"),
        "--input",
        &r.p("pts.npy"),
        "-o",
        &r.p("pz.npy"),
    ]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = flowc(&[
        "decode",
        &r.p("vec"),
        "--input",
        &r.p("pz.npy"),
        "-o",
        &r.p("pb.npy"),
    ]);
    assert_eq!(code, 0, "{err}");
    let back = f32s(&npy_payload(&r.p("pb.npy")).1);
    let worst = pts
        .iter()
        .zip(&back)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(worst < 1e-4, "{worst}");
    // The path's ends are the two inputs.
    let (img, images) = (r.p("img"), r.p("images.npy"));
    for slerp in [false, true] {
        let mut args = vec![
            "interpolate",
            &img,
            "--input",
            &images,
            "--from",
            "3",
            "--to",
            "8",
            "--steps",
            "5",
        ];
        let out = r.p(&format!("path{slerp}.npy"));
        args.extend(["-o", &out]);
        if slerp {
            args.push("--slerp");
        }
        let (code, _, err) = flowc(&args);
        assert_eq!(code, 0, "{err}");
        let (_, path) = npy_payload(&out);
        assert_eq!(&path[..16], &original[3 * 16..4 * 16]);
        assert_eq!(&path[4 * 16..], &original[8 * 16..9 * 16]);
    }
    let (code, _, err) = flowc(&[
        "interpolate",
        &r.p("img"),
        "--input",
        &r.p("images.npy"),
        "--from",
        "3",
        "--to",
        "60",
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("--to 60") && err.contains("0..59"), "{err}");
}

#[test]
fn scores_average_to_evals_figure() {
    let r = Runs::new();
    let data = format!("npy:{}", r.p("images.npy"));
    let (code, csv, err) = flowc(&["score", &r.p("img"), "--data", &data, "--importance", "4"]);
    assert_eq!(code, 0, "{err}");
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("index,nll_nats,bits_per_dim,nll_iw_nats,bits_per_dim_iw")
    );
    let rows: Vec<Vec<f64>> = lines
        .map(|l| l.split(',').map(|v| v.parse().unwrap()).collect())
        .collect();
    assert_eq!(rows.len(), 6, "the 10% test split of 60");
    let mean = rows.iter().map(|r| r[2]).sum::<f64>() / rows.len() as f64;
    let (code, json, err) = flowc(&[
        "eval",
        &r.p("img"),
        "--data",
        &data,
        "--format",
        "json",
        "--importance",
        "4",
    ]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(
        (v["bits_per_dim"].as_f64().unwrap() - mean).abs() < 1e-9,
        "{v} vs {mean}"
    );
    let iw_mean = rows.iter().map(|r| r[4]).sum::<f64>() / rows.len() as f64;
    assert!((v["bits_per_dim_iw"].as_f64().unwrap() - iw_mean).abs() < 1e-9);
    assert_eq!(v["importance_samples"], 4);
    assert!(
        iw_mean <= mean + 1e-9,
        "the bound over 4 draws is no looser here: {iw_mean} vs {mean}"
    );
    let (code, _, err) = flowc(&[
        "score",
        &r.p("vec"),
        "--data",
        "toy:two-moons",
        "--importance",
        "4",
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("8-bit"), "{err}");
}

#[test]
fn completion_keeps_what_is_observed_and_says_when_there_is_nothing_to_do() {
    let r = Runs::new();
    let (_, original) = npy_payload(&r.p("images.npy"));
    let first4 = &original[..4 * 16];
    write_npy(&r.dir.path().join("four.npy"), "|u1", "4, 1, 4, 4", first4);
    let (code, _, err) = flowc(&[
        "complete",
        &r.p("img"),
        "--input",
        &r.p("four.npy"),
        "--mask",
        "right",
        "--steps",
        "20",
        "-o",
        &r.p("c.npy"),
        "--grid",
        &r.p("c.png"),
    ]);
    assert_eq!(code, 0, "{err}");
    let (header, done) = npy_payload(&r.p("c.npy"));
    assert!(header.contains("(4, 1, 4, 4)"), "{header}");
    for (i, (a, b)) in first4.iter().zip(&done).enumerate() {
        if i % 4 < 2 {
            assert_eq!(a, b, "observed value {i} changed");
        }
    }
    let grid = image::open(r.p("c.png")).unwrap();
    assert_eq!((grid.width(), grid.height()), (3 * 6 + 2, 4 * 6 + 2));
    let (code, _, err) = flowc(&[
        "complete",
        &r.p("img"),
        "--input",
        &r.p("four.npy"),
        "--mask",
        "random:0.5",
        "--method",
        "sample",
        "-n",
        "3",
        "--steps",
        "10",
        "-o",
        &r.p("s.npy"),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("acceptance"), "{err}");
    assert!(npy_payload(&r.p("s.npy")).0.contains("(4, 3, 1, 4, 4)"));
    // Nothing missing: the input comes back, with a warning.
    write_npy(&r.dir.path().join("ones.npy"), "|u1", "1, 4, 4", &[1u8; 16]);
    let (code, _, err) = flowc(&[
        "complete",
        &r.p("img"),
        "--input",
        &r.p("four.npy"),
        "--mask",
        &r.p("ones.npy"),
        "-o",
        &r.p("same.npy"),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("nothing to complete"), "{err}");
    assert_eq!(npy_payload(&r.p("same.npy")).1, first4);
    write_npy(&r.dir.path().join("zeros.npy"), "|u1", "16", &[0u8; 16]);
    let (code, _, err) = flowc(&[
        "complete",
        &r.p("img"),
        "--input",
        &r.p("four.npy"),
        "--mask",
        &r.p("zeros.npy"),
        "--steps",
        "5",
        "-o",
        &r.p("all.npy"),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("observes nothing"), "{err}");
}

/// Messages for what does not fit, and the help texts, as snapshots (the
/// temporary folder's path replaced by DIR).
#[test]
fn messages_and_help() {
    let r = Runs::new();
    write_npy(
        &r.dir.path().join("wrong.npy"),
        "|u1",
        "2, 1, 5, 5",
        &[0u8; 50],
    );
    write_npy(&r.dir.path().join("badmask.npy"), "|u1", "3, 3", &[0u8; 9]);
    write_npy(&r.dir.path().join("two.npy"), "<f4", "1, 2", &[0u8; 8]);
    let cases: Vec<(&str, Vec<String>)> = vec![
        (
            "input_of_the_wrong_shape",
            vec![
                "complete".into(),
                r.p("img"),
                "--input".into(),
                r.p("wrong.npy"),
                "--mask".into(),
                "left".into(),
            ],
        ),
        (
            "mask_of_the_wrong_shape",
            vec![
                "complete".into(),
                r.p("img"),
                "--input".into(),
                r.p("images.npy"),
                "--mask".into(),
                r.p("badmask.npy"),
            ],
        ),
        (
            "region_mask_on_a_vector_flow",
            vec![
                "complete".into(),
                r.p("vec"),
                "--input".into(),
                r.p("two.npy"),
                "--mask".into(),
                "left".into(),
            ],
        ),
        (
            "bad_random_mask",
            vec![
                "complete".into(),
                r.p("img"),
                "--input".into(),
                r.p("images.npy"),
                "--mask".into(),
                "random:1.5".into(),
            ],
        ),
        (
            "latents_of_the_wrong_width",
            vec![
                "decode".into(),
                r.p("img"),
                "--input".into(),
                r.p("images.npy"),
            ],
        ),
        ("score_without_input", vec!["score".into(), r.p("img")]),
    ];
    for (name, args) in cases {
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, _, err) = flowc(&argv);
        let err = err.replace(&r.dir.path().display().to_string(), "DIR");
        insta::assert_snapshot!(name, format!("exit {code}\n{err}"));
    }
    for command in ["complete", "encode", "decode", "interpolate", "score"] {
        let (code, out, _) = flowc(&[command, "--help"]);
        assert_eq!(code, 0);
        insta::assert_snapshot!(format!("help_{command}"), out);
    }
}
