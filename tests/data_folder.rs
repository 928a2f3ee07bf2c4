//! `--data folder:PATH` through the binary: `flowc train` runs on a folder of
//! PNG and JPEG files of other sizes (resized to the flow's 3x4x4), `eval`
//! reads it the same way, and the folder's problems exit 2 with their file.

use std::path::Path;

use image::{ImageBuffer, Luma, Rgb, RgbImage};

mod common;
use common::cli::flowc;

const FLOW: &str = "flow tiny_rgb {
    input image(3, 4, 4)
    net r = resnet(blocks = 1, features = 4)
    logit(alpha = 0.05)
    coupling affine(mask = checkerboard(even), net = r)
    coupling affine(mask = checkerboard(odd), net = r)
}
";

fn write_folder(root: &Path) {
    for (class, n) in [("a", 6u32), ("b", 6)] {
        let dir = root.join(class).join("nested");
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..n {
            let img: RgbImage = ImageBuffer::from_fn(12, 8, |x, y| {
                Rgb([
                    (x * 20 + i) as u8,
                    (y * 30) as u8,
                    if class == "a" { 40 } else { 220 },
                ])
            });
            if i % 2 == 0 {
                img.save(dir.join(format!("{i}.png"))).unwrap();
            } else {
                img.save(dir.join(format!("{i}.jpg"))).unwrap();
            }
        }
    }
    // One grey image too: replicated to RGB.
    let g: ImageBuffer<Luma<u8>, Vec<u8>> = ImageBuffer::from_fn(5, 5, |x, _| Luma([x as u8 * 40]));
    g.save(root.join("a").join("grey.png")).unwrap();
}

/// `flowc train FLOW --data DATA --steps 1 --batch 4 --out DIR/RUN EXTRA..`.
fn train_one_step(flow: &Path, data: &str, run: &Path, extra: &[&str]) -> (i32, String, String) {
    let (f, r) = (flow.display().to_string(), run.display().to_string());
    let mut args = vec![
        "train", &f, "--data", data, "--steps", "1", "--batch", "4", "--out", &r,
    ];
    args.extend_from_slice(extra);
    flowc(&args)
}

#[test]
fn train_and_eval_on_a_folder_of_images() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("imgs");
    write_folder(&root);
    let flow = dir.path().join("tiny.flow");
    std::fs::write(&flow, FLOW).unwrap();
    let run = dir.path().join("run");
    let data = format!("folder:{}", root.display());
    let extra = ["--eval-every", "1", "--resize", "pad"];
    let (code, _, err) = train_one_step(&flow, &data, &run, &extra);
    assert_eq!(code, 0, "{err}");
    assert!(run.join("metrics.jsonl").is_file());
    let r = run.display().to_string();
    let (code, out, err) = flowc(&[
        "eval", &r, "--data", &data, "--resize", "pad", "--format", "json",
    ]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    // 13 images: the 90/10 split leaves 1 for test.
    assert_eq!(v["examples"], 1, "{out}");
    assert!(v["bits_per_dim"].as_f64().unwrap().is_finite());

    // A corrupt JPEG: skipped and counted, or with --strict-images exit 2 naming it.
    let broken = [0xff, 0xd8, 0xff, 0x00, 1, 2];
    std::fs::write(root.join("b").join("broken.jpg"), broken).unwrap();
    let (code, _, err) = train_one_step(&flow, &data, &dir.path().join("run2"), &[]);
    assert_eq!(code, 0, "{err}");
    let skipped = err.contains("broken.jpg") && err.contains("skipped 1 of 14");
    assert!(skipped, "{err}");
    let strict = ["--strict-images"];
    let (code, _, err) = train_one_step(&flow, &data, &dir.path().join("run3"), &strict);
    assert_eq!(code, 2, "{err}");
    let named = err.contains("broken.jpg") && err.contains("cannot decode");
    assert!(named, "{err}");

    // An empty folder.
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let data = format!("folder:{}", empty.display());
    let (code, _, err) = train_one_step(&flow, &data, &dir.path().join("run4"), &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("holds no images"), "{err}");

    // A vector flow.
    let vflow = dir.path().join("v.flow");
    let src = "flow v {\n    input vector(2)\n    net m = mlp(hidden = 4, layers = 2)\n    coupling affine(mask = alternate(even), net = m)\n}\n";
    std::fs::write(&vflow, src).unwrap();
    let data = format!("folder:{}", root.display());
    let (code, _, err) = train_one_step(&vflow, &data, &dir.path().join("run5"), &[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("gives images, but the flow's input is vector(2)"),
        "{err}"
    );
}

/// `metrics.jsonl`'s train bits/dim, one per step.
fn train_bpd(run: &Path) -> Vec<f64> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["train_bits_per_dim"].as_f64().unwrap()
        })
        .collect()
}

#[test]
fn a_streamed_folder_trains_as_the_in_memory_one_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("imgs");
    write_folder(&root);
    let test = dir.path().join("test");
    write_folder(&test);
    let flow = dir.path().join("tiny.flow");
    std::fs::write(&flow, FLOW).unwrap();
    let data = format!("folder:{}", root.display());
    let t = test.display().to_string();
    let run = |name: &str, steps: &str, extra: &[&str]| {
        let r = dir.path().join(name).display().to_string();
        let f = flow.display().to_string();
        let mut args = vec![
            "train",
            &f,
            "--data",
            &data,
            "--test",
            &t,
            "--steps",
            steps,
            "--batch",
            "4",
            "--eval-every",
            "3",
            "--out",
            &r,
        ];
        args.extend_from_slice(extra);
        flowc(&args)
    };
    // 13 training images at batch 4: 6 steps cross an epoch boundary.
    let (code, _, err) = run("memory", "6", &[]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run("streamed", "6", &["--stream"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("data: streamed"), "{err}");
    let memory = train_bpd(&dir.path().join("memory"));
    assert_eq!(memory.len(), 6);
    assert_eq!(train_bpd(&dir.path().join("streamed")), memory);
    // A streamed run stopped at step 3 and resumed reads the same batches.
    let (code, _, err) = run("parts", "3", &["--stream"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run("parts", "6", &["--stream", "--resume"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(train_bpd(&dir.path().join("parts")), memory);
    // eval streams the test folder to the same figure.
    let r = dir.path().join("memory").display().to_string();
    let eval = |extra: &[&str]| {
        let mut args = vec![
            "eval", &r, "--data", &data, "--test", &t, "--format", "json",
        ];
        args.extend_from_slice(extra);
        let (code, out, err) = flowc(&args);
        assert_eq!(code, 0, "{err}");
        serde_json::from_str::<serde_json::Value>(out.trim()).unwrap()
    };
    let (a, b) = (eval(&[]), eval(&["--stream"]));
    assert_eq!(a["examples"], 13);
    assert_eq!(a, b);

    // A corrupt file met mid-stream: named and counted, or with
    // --strict-images exit 2 naming it.
    std::fs::write(
        root.join("b").join("broken.jpg"),
        [0xff, 0xd8, 0xff, 0, 1, 2],
    )
    .unwrap();
    let (code, _, err) = run("corrupt", "6", &["--stream"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("skipped") && err.contains("broken.jpg"),
        "{err}"
    );
    assert!(err.contains("1 of 14 training image files"), "{err}");
    let (code, _, err) = run("strict", "6", &["--stream", "--strict-images"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("broken.jpg") && err.contains("cannot decode"),
        "{err}"
    );
}
