//! What a careless or hostile user does to the run commands, through the
//! real binary: bad option values, two trainings on one folder, Ctrl-C and
//! SIGTERM, a full disk, a closed pipe, outputs aimed at a run's own files,
//! resumes that change a setting. Nothing panics, nothing already saved is
//! lost, and every refusal exits with the documented status.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::cli::{flowc, tensors, write_images};

/// A small 2-D flow: each step takes about a millisecond.
const MOONS: &str = "flow moons {
    input vector(2)
    net n = mlp(hidden = 16, layers = 1)
    coupling affine(mask = alternate(even), net = n)
    coupling affine(mask = alternate(odd), net = n)
    coupling affine(mask = alternate(even), net = n)
    coupling affine(mask = alternate(odd), net = n)
}
";

struct Dir {
    dir: tempfile::TempDir,
}

impl Dir {
    fn new() -> Dir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("moons.flow"), MOONS).unwrap();
        Dir { dir }
    }
    fn p(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    /// `train moons.flow` on two-moons into `out`, with `extra` options.
    fn train_args(&self, out: &str, extra: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = ["train", &self.p("moons.flow"), "--data", "toy:two-moons"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        for (option, default) in [("--batch", "32"), ("--eval-examples", "64")] {
            if !extra.iter().any(|e| e.starts_with(option)) {
                args.extend([option, default].map(String::from));
            }
        }
        args.extend(["--out".to_string(), self.p(out)]);
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    }
    fn train(&self, out: &str, extra: &[&str]) -> (i32, String, String) {
        let args = self.train_args(out, extra);
        flowc(&args.iter().map(String::as_str).collect::<Vec<_>>())
    }
    fn spawn_train(&self, out: &str, extra: &[&str]) -> Child {
        Command::new(env!("CARGO_BIN_EXE_flowc"))
            .args(self.train_args(out, extra))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }
}

/// The steps logged in a run's metrics.jsonl (every line must parse).
fn logged_steps(run: &Path) -> Vec<u64> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}"));
            v["step"].as_u64().unwrap()
        })
        .collect()
}

fn checkpoint_step(run: &Path) -> u64 {
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("state.json")).unwrap()).unwrap();
    state["step"].as_u64().unwrap()
}

/// Waits until the run has logged `n` steps.
fn wait_for_steps(run: &Path, n: usize) {
    let start = Instant::now();
    while logged_steps_lenient(run) < n {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "training made no progress"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whole lines so far (the writer may be mid-line).
fn logged_steps_lenient(run: &Path) -> usize {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .map(|t| t.matches('\n').count())
        .unwrap_or(0)
}

fn signal(child: &Child, sig: i32) {
    assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
}

fn finish(mut child: Child) -> (i32, String) {
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let status = child.wait().unwrap();
    (status.code().unwrap_or(-1), err)
}

#[test]
fn every_bad_option_value_is_refused_before_any_work() {
    let d = Dir::new();
    let run = d.p("run");
    let flow = d.p("moons.flow");
    let train = |extra: &[&str]| d.train("fresh", extra);
    let cases: Vec<(&[&str], &str)> = vec![
        (
            &["--lr", "nan"],
            "--lr NaN: expected a finite number greater than 0",
        ),
        (
            &["--lr", "0"],
            "--lr 0: expected a finite number greater than 0",
        ),
        (
            &["--lr", "-1"],
            "--lr -1: expected a finite number greater than 0",
        ),
        (&["--lr", "inf"], "--lr inf: expected"),
        (
            &["--l2", "nan"],
            "--l2 NaN: expected a finite number, 0 or greater",
        ),
        (
            &["--l2=-1"],
            "--l2 -1: expected a finite number, 0 or greater",
        ),
        (&["--clip", "nan"], "--clip NaN: expected"),
        (&["--clip", "-0.5"], "--clip -0.5: expected"),
        (&["--steps", "0"], "--steps 0: expected 1 or more"),
        (&["--epochs", "0"], "--epochs 0: expected 1 or more"),
        (&["--eval-every", "0"], "--eval-every 0: expected 1 or more"),
        (
            &["--eval-examples", "0"],
            "--eval-examples 0: expected 1 or more",
        ),
        (&["--batch", "0"], "--batch 0: expected 1 or more"),
        (&["--batch", "-3"], "invalid value '-3'"),
    ];
    for (extra, want) in cases {
        let (code, _, err) = train(extra);
        assert_eq!(code, 2, "{extra:?}: {err}");
        assert!(err.contains(want), "{extra:?}: {err}");
        assert!(
            !err.contains("'-- "),
            "clap's advice for a negative number: {err}"
        );
        assert!(
            !d.path("fresh").exists(),
            "{extra:?} created the run folder"
        );
    }
    // Several bad values: one line each.
    let (code, _, err) = train(&["--lr", "nan", "--l2", "-1", "--steps", "0"]);
    assert_eq!(code, 2);
    assert_eq!(
        err.lines().filter(|l| l.starts_with("error: --")).count(),
        3,
        "{err}"
    );

    let (code, _, err) = d.train("run", &["--steps", "2"]);
    assert_eq!(code, 0, "{err}");
    let sample = |extra: &[&str]| {
        let mut args = vec!["sample", run.as_str(), "-o", "-"];
        args.extend_from_slice(extra);
        flowc(&args)
    };
    for (extra, want) in [
        (
            &["--temperature", "nan"][..],
            "--temperature NaN: expected a finite number greater than 0",
        ),
        (&["--temperature", "inf"], "--temperature inf"),
        (&["--temperature", "-1"], "--temperature -1"),
        (&["--temperature", "0"], "--temperature 0"),
        (&["-n", "0"], "-n 0: expected 1 or more"),
        (&["--batch", "0"], "--batch 0"),
    ] {
        let (code, out, err) = sample(extra);
        assert_eq!((code, out.as_str()), (2, ""), "{extra:?}: {err}");
        assert!(err.contains(want), "{extra:?}: {err}");
    }
    for (extra, want) in [
        (&["--batch", "0"][..], "--batch 0"),
        (&["--samples", "0"], "--samples 0"),
    ] {
        let mut args = vec!["eval", run.as_str(), "--data", "toy:two-moons"];
        args.extend_from_slice(extra);
        let (code, out, err) = flowc(&args);
        assert_eq!((code, out.as_str()), (2, ""), "{extra:?}: {err}");
        assert!(err.contains(want), "{err}");
    }
    let (code, _, err) = flowc(&["bench", &flow, "--batch", "0"]);
    assert_eq!(code, 2, "{err}");
}

#[test]
fn batches_the_run_cannot_use_are_refused() {
    let d = Dir::new();
    // two-moons has 50,000 training points.
    let (code, _, err) = d.train("big", &["--steps", "1", "--batch", "60000"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--batch 60000 is larger than the 50000 training examples")
            && err.contains("--allow-repeats"),
        "{err}"
    );
    let (code, _, err) = d.train(
        "big",
        &[
            "--steps",
            "1",
            "--batch",
            "60000",
            "--allow-repeats",
            "--eval-every",
            "5",
        ],
    );
    assert_eq!(code, 0, "{err}");
    std::fs::write(
        d.path("bn.flow"),
        MOONS.replace(
            "    coupling affine(mask = alternate(odd), net = n)\n}",
            "    batchnorm\n    coupling affine(mask = alternate(odd), net = n)\n}",
        ),
    )
    .unwrap();
    let (code, _, err) = flowc(&[
        "train",
        &d.p("bn.flow"),
        "--data",
        "toy:two-moons",
        "--batch",
        "1",
        "--steps",
        "1",
        "--out",
        &d.p("bn"),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--batch 1") && err.contains("batchnorm"),
        "{err}"
    );
    assert!(!d.path("bn").join("checkpoint.safetensors").exists());
}

#[test]
fn a_second_train_on_the_same_folder_is_refused_with_the_owners_pid() {
    let d = Dir::new();
    let run = d.path("run");
    // A checkpoint every step: eval and sample read it while it is replaced.
    let first = d.spawn_train("run", &["--steps", "10000000", "--eval-every", "1"]);
    wait_for_steps(&run, 2);
    for _ in 0..5 {
        let (code, out, err) = flowc(&[
            "eval",
            &d.p("run"),
            "--data",
            "toy:two-moons",
            "--format",
            "json",
        ]);
        assert_eq!(code, 0, "{err}");
        assert!(
            serde_json::from_str::<serde_json::Value>(&out).unwrap()["bits_per_dim"]
                .as_f64()
                .unwrap()
                .is_finite()
        );
        let (code, _, err) = flowc(&["sample", &d.p("run"), "-n", "2", "-o", "-"]);
        assert_eq!(code, 0, "{err}");
    }
    // Another flow into the same folder: refused at once, nothing replaced.
    std::fs::write(d.path("other.flow"), MOONS.replace("moons", "other")).unwrap();
    let started = Instant::now();
    let (code, _, err) = flowc(&[
        "train",
        &d.p("other.flow"),
        "--data",
        "toy:two-moons",
        "--out",
        &d.p("run"),
        "--steps",
        "5",
    ]);
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&format!("PID {}", first.id())) && err.contains("in use"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(run.join("model.flow")).unwrap(),
        MOONS
    );
    signal(&first, libc::SIGTERM);
    let (code, err) = finish(first);
    assert_eq!(code, 143, "{err}");
    // The lock went with its owner.
    let next = (checkpoint_step(&run) + 1).to_string();
    let (code, _, err) = d.train("run", &["--steps", &next, "--resume"]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn ctrl_c_saves_the_step_it_stopped_at_and_the_resumed_run_equals_an_unbroken_one() {
    let d = Dir::new();
    let run = d.path("parts");
    let child = d.spawn_train(
        "parts",
        &[
            "--steps",
            "1000000",
            "--eval-every",
            "1000000",
            "--seed",
            "3",
        ],
    );
    wait_for_steps(&run, 5);
    signal(&child, libc::SIGINT);
    let (code, err) = finish(child);
    assert_eq!(code, 130, "{err}");
    let step = checkpoint_step(&run);
    assert!(
        err.contains(&format!("SIGINT: stopped after step {step}/1000000")),
        "{err}"
    );
    assert!(err.contains("checkpoint saved to"), "{err}");
    // The checkpoint is at the step the log ends at.
    assert_eq!(logged_steps(&run), (1..=step).collect::<Vec<_>>());
    // Resume without repeating the settings: the run keeps --seed 3.
    let target = (step + 5).to_string();
    let (code, _, err) = d.train("parts", &["--steps", &target, "--resume"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = d.train("whole", &["--steps", &target, "--seed", "3"]);
    assert_eq!(code, 0, "{err}");
    let (a, b) = (tensors(&d.path("whole")), tensors(&run));
    assert_eq!(a.len(), b.len());
    for ((na, va), (nb, vb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        let diff = va
            .iter()
            .zip(vb)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(diff <= 1e-6, "{na} differs by {diff}");
    }
    assert_eq!(logged_steps(&run), (1..=step + 5).collect::<Vec<_>>());
}

#[test]
fn a_second_ctrl_c_exits_at_once_and_the_last_checkpoint_still_loads() {
    let d = Dir::new();
    let run = d.path("run");
    let child = d.spawn_train("run", &["--steps", "1000000", "--eval-every", "1"]);
    wait_for_steps(&run, 3);
    signal(&child, libc::SIGINT);
    signal(&child, libc::SIGINT);
    let (code, err) = finish(child);
    assert_eq!(code, 130, "{err}");
    let (code, out, err) = flowc(&[
        "eval",
        &d.p("run"),
        "--data",
        "toy:two-moons",
        "--format",
        "json",
    ]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(v["bits_per_dim"].as_f64().unwrap().is_finite());
}

/// Runs `args` with files limited to `bytes` (a full disk, for one file).
fn with_file_size_limit(args: &[String], bytes: u64) -> (i32, String) {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_flowc"));
    cmd.args(args).stdout(Stdio::null()).stderr(Stdio::piped());
    unsafe {
        cmd.pre_exec(move || {
            // EFBIG from write(2) rather than death by SIGXFSZ.
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let lim = libc::rlimit {
                rlim_cur: bytes,
                rlim_max: bytes,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn a_full_disk_stops_the_run_with_whole_files_and_no_temporaries() {
    let d = Dir::new();
    // The checkpoint (about 4 KB) does not fit: the first save fails.
    let (code, err) = with_file_size_limit(
        &d.train_args("ckpt", &["--steps", "10", "--eval-every", "1"]),
        2000,
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("checkpoint.safetensors") && err.contains("too large"),
        "{err}"
    );
    let mut left: Vec<String> = std::fs::read_dir(d.path("ckpt"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, [".lock", "metrics.jsonl", "model.flow"]);
    // The log fills up: it ends with its last whole line.
    let (code, err) = with_file_size_limit(
        &d.train_args("log", &["--steps", "100000", "--eval-every", "1000000"]),
        3000,
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("metrics.jsonl"), "{err}");
    let text = std::fs::read_to_string(d.path("log").join("metrics.jsonl")).unwrap();
    assert!(
        text.len() > 2000 && text.ends_with('\n'),
        "{} bytes",
        text.len()
    );
    let steps = logged_steps(&d.path("log"));
    assert_eq!(steps, (1..=steps.len() as u64).collect::<Vec<_>>());
}

#[test]
fn a_resume_may_repeat_its_settings_but_not_change_them() {
    let d = Dir::new();
    let (code, _, err) = d.train("run", &["--steps", "3", "--lr", "2e-3", "--seed", "5"]);
    assert_eq!(code, 0, "{err}");
    for (extra, want) in [
        (
            &["--lr", "1e-3"][..],
            "--lr 0.001 (this run was started with 0.002)",
        ),
        (
            &["--batch", "16"],
            "--batch 16 (this run was started with 32)",
        ),
        (&["--seed", "6"], "--seed 6 (this run was started with 5)"),
        (
            &["--cosine"],
            "--cosine true (this run was started with false)",
        ),
        (&["--l2", "0"], "--l2 0 (this run was started with 0.00005)"),
    ] {
        let mut args = vec!["--steps", "6", "--resume"];
        args.extend_from_slice(extra);
        let (code, _, err) = d.train("run", &args);
        assert_eq!(code, 2, "{extra:?}: {err}");
        assert!(err.contains(want), "{extra:?}: {err}");
    }
    let (code, _, err) = flowc(&[
        "train",
        &d.p("moons.flow"),
        "--data",
        "toy:circles",
        "--out",
        &d.p("run"),
        "--steps",
        "6",
        "--resume",
    ]);
    assert_eq!(code, 2);
    assert!(
        err.contains("--data toy:circles (this run was started with toy:two-moons)"),
        "{err}"
    );
    assert_eq!(
        checkpoint_step(&d.path("run")),
        3,
        "a refused resume trains nothing"
    );
    // The recorded values, written another way, are fine.
    let (code, _, err) = d.train(
        "run",
        &["--steps", "6", "--resume", "--lr", "0.002", "--seed", "5"],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(checkpoint_step(&d.path("run")), 6);
    // At its target already: nothing to train, and no figure made up (the
    // CLI fuzz test found a "train NaN bits/dim" here).
    let (code, _, err) = d.train("run", &["--steps", "6", "--resume"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("already at step 6") && !err.contains("NaN"),
        "{err}"
    );
}

#[test]
fn a_cosine_run_resumes_on_its_own_schedule() {
    let d = Dir::new();
    let (code, _, err) = d.train("whole", &["--steps", "8", "--cosine"]);
    assert_eq!(code, 0, "{err}");
    // The same run stopped after its first step, as Ctrl-C stops it.
    let data = flowc::data::load("toy:two-moons", Path::new("data"), None, 0).unwrap();
    let cfg = flowc::train::TrainConfig {
        steps: Some(8),
        epochs: None,
        batch: 32,
        lr: 1e-3,
        l2: 5e-5,
        clip: 100.0,
        seed: 0,
        out: d.path("parts"),
        eval_every: 500,
        eval_examples: 64,
        resume: false,
        flip: true,
        data: "toy:two-moons".into(),
        test_data: None,
        cosine: true,
        allow_repeats: false,
        given: vec![],
        interrupt: flowc::train::Interrupt::never(),
    };
    cfg.interrupt.raise(libc::SIGINT);
    let data = flowc::data::Data::from(data);
    let outcome = flowc::train::train(MOONS, &data, &cfg, &candle_core::Device::Cpu).unwrap();
    assert_eq!(
        outcome,
        flowc::train::Outcome::Interrupted {
            signal: libc::SIGINT,
            step: 1
        }
    );
    let (code, _, err) = d.train("parts", &["--steps", "12", "--resume"]);
    assert_eq!(
        code, 2,
        "a longer cosine schedule changes the steps taken: {err}"
    );
    assert!(err.contains("cosine schedule spans 8 steps"), "{err}");
    // --cosine not repeated: the run keeps it.
    let (code, _, err) = d.train("parts", &["--steps", "8", "--resume"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(tensors(&d.path("whole")), tensors(&d.path("parts")));
}

#[test]
fn outputs_never_replace_a_runs_files_and_follow_their_extension() {
    let d = Dir::new();
    let (code, _, err) = d.train("run", &["--steps", "2"]);
    assert_eq!(code, 0, "{err}");
    let run = d.p("run");
    let before = std::fs::read(d.path("run").join("checkpoint.safetensors")).unwrap();
    for target in [
        "checkpoint.safetensors",
        "state.json",
        "metrics.jsonl",
        "model.flow",
        "samples.png",
    ] {
        let o = format!("{run}/./{target}");
        let (code, _, err) = flowc(&["sample", &run, "-n", "4", "-o", &o]);
        assert_eq!(code, 2, "{target}: {err}");
        assert!(err.contains(&format!("own {target}")), "{err}");
    }
    assert_eq!(
        std::fs::read(d.path("run").join("checkpoint.safetensors")).unwrap(),
        before
    );
    let (code, _, err) = flowc(&["sample", &run, "-n", "4", "-o", &d.p("x.txt")]);
    assert_eq!(code, 2);
    assert!(err.contains(".png, .npy or .csv"), "{err}");
    // --plot writes beside the samples, never over them.
    let png = d.p("pp.png");
    let (code, _, err) = flowc(&["sample", &run, "-n", "300", "-o", &png, "--plot"]);
    assert_eq!(code, 0, "{err}");
    let scatter = image::open(&png).unwrap();
    let density = image::open(d.p("pp.density.png")).unwrap();
    assert_eq!((scatter.width(), density.width()), (400, 404));
    // -o -: CSV on stdout, the same values as the .npy file (little-endian f32).
    let (code, csv, err) = flowc(&["sample", &run, "-n", "5", "--batch", "2", "-o", "-"]);
    assert_eq!(code, 0, "{err}");
    let rows: Vec<Vec<f32>> = csv
        .lines()
        .map(|l| l.split(',').map(|v| v.parse().unwrap()).collect())
        .collect();
    assert_eq!((rows.len(), rows[0].len()), (5, 2));
    let (code, _, err) = flowc(&["sample", &run, "-n", "5", "-o", &d.p("s.npy")]);
    assert_eq!(code, 0, "{err}");
    let npy = std::fs::read(d.path("s.npy")).unwrap();
    let header_len = u16::from_le_bytes([npy[8], npy[9]]) as usize;
    assert!(String::from_utf8_lossy(&npy[10..10 + header_len]).contains("'shape': (5, 2)"));
    let values: Vec<f32> = npy[10 + header_len..]
        .chunks(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    assert_eq!(values, rows.concat(), "samples do not depend on --batch");
}

#[test]
fn image_samples_in_every_format_agree() {
    let d = Dir::new();
    std::fs::write(d.path("tiny.flow"), "flow tiny {\n    input image(1, 4, 4)\n    net r = resnet(blocks = 1, features = 4)\n    logit(alpha = 0.05)\n    coupling affine(mask = checkerboard(even), net = r)\n    coupling affine(mask = checkerboard(odd), net = r)\n}\n").unwrap();
    write_images(&d.path("images.npy"), 50);
    let data = format!("npy:{}", d.p("images.npy"));
    let (code, _, err) = flowc(&[
        "train",
        &d.p("tiny.flow"),
        "--data",
        &data,
        "--steps",
        "2",
        "--batch",
        "8",
        "--out",
        &d.p("run"),
    ]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = flowc(&["sample", &d.p("run"), "-n", "6", "-o", &d.p("s.npy")]);
    assert_eq!(code, 0, "{err}");
    let npy = std::fs::read(d.path("s.npy")).unwrap();
    let header_len = u16::from_le_bytes([npy[8], npy[9]]) as usize;
    assert!(String::from_utf8_lossy(&npy[10..10 + header_len])
        .contains("'descr': '|u1', 'fortran_order': False, 'shape': (6, 1, 4, 4)"));
    let pixels = &npy[10 + header_len..];
    assert_eq!(pixels.len(), 6 * 16);
    let (code, csv, err) = flowc(&["sample", &d.p("run"), "-n", "6", "-o", "-", "--batch", "4"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        csv.starts_with("\u{FFFD}PNG\r\n"),
        "an image flow writes PNG to stdout"
    );
    let (code, _, err) = flowc(&["sample", &d.p("run"), "-n", "6", "-o", &d.p("s.csv")]);
    assert_eq!(code, 0, "{err}");
    let from_csv: Vec<u8> = std::fs::read_to_string(d.path("s.csv"))
        .unwrap()
        .lines()
        .flat_map(|l| {
            l.split(',')
                .map(|v| v.parse::<u8>().unwrap())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(from_csv, pixels);
    let (code, _, err) = flowc(&["sample", &d.p("run"), "-n", "6", "-o", &d.p("s.png")]);
    assert_eq!(code, 0, "{err}");
    let grid = image::open(d.p("s.png")).unwrap().to_rgb8();
    // Image 4 is in row 1, column 1 of a 3-column grid with a 2-pixel gap.
    let (ox, oy) = (2 + 6, 2 + 6);
    for y in 0..4 {
        for x in 0..4 {
            assert_eq!(
                grid.get_pixel(ox + x, oy + y)[0],
                pixels[4 * 16 + (y * 4 + x) as usize]
            );
        }
    }
    let (code, _, err) = flowc(&["sample", &d.p("run"), "-n", "10001", "-o", &d.p("big.png")]);
    assert_eq!(code, 2);
    assert!(err.contains("at most 10000"), "{err}");
}

#[test]
fn a_closed_pipe_ends_quietly_with_status_0() {
    let d = Dir::new();
    let (code, _, err) = d.train("run", &["--steps", "1"]);
    assert_eq!(code, 0, "{err}");
    for args in [
        vec![
            "compile",
            "flows/realnvp_cifar10.flow",
            "--emit",
            "plan-json",
        ],
        vec!["sample", &d.p("run"), "-n", "1000000", "-o", "-"],
    ] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_flowc"))
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        assert!(!first.is_empty());
        // The reader is gone (as `| head -1` leaves it).
        let (code, err) = finish(child);
        assert_eq!(code, 0, "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn exit_statuses_follow_the_readme() {
    let d = Dir::new();
    std::fs::write(d.path("bad.flow"), "flow bad { input vector(2) squeeze }").unwrap();
    let status = |args: &[&str]| flowc(args).0;
    assert_eq!(status(&["check", &d.p("moons.flow")]), 0);
    assert_eq!(
        status(&["check", &d.p("bad.flow")]),
        1,
        "errors in the program"
    );
    assert_eq!(
        status(&["train", &d.p("bad.flow"), "--data", "toy:two-moons"]),
        1
    );
    assert_eq!(status(&["check", &d.p("missing.flow")]), 2, "I/O");
    assert_eq!(
        status(&["check", "--frobnicate", &d.p("moons.flow")]),
        2,
        "usage"
    );
    assert_eq!(
        status(&[
            "train",
            &d.p("moons.flow"),
            "--data",
            "toy:nothing",
            "--out",
            &d.p("x")
        ]),
        2,
        "unknown data"
    );
    assert_eq!(
        status(&[
            "train",
            &d.p("moons.flow"),
            "--data",
            "mnist",
            "--data-dir",
            &d.p("nowhere"),
            "--out",
            &d.p("x")
        ]),
        2,
        "missing data"
    );
    assert_eq!(
        status(&["eval", &d.p("nowhere"), "--data", "toy:two-moons"]),
        2,
        "not a run folder"
    );
    assert_eq!(status(&["sample", &d.p("nowhere")]), 2);
    assert_eq!(status(&["bench", &d.p("bad.flow")]), 1);
    // A diverging run is a failed computation (tests/train.rs); a broken
    // model.flow in a run is named with its path.
    let (code, _, err) = d.train("run", &["--steps", "1"]);
    assert_eq!(code, 0, "{err}");
    std::fs::write(d.path("run").join("model.flow"), "flow broken {").unwrap();
    let (code, _, err) = flowc(&["eval", &d.p("run"), "--data", "toy:two-moons"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&d.path("run").join("model.flow").display().to_string()),
        "{err}"
    );
}

#[test]
fn train_shows_the_flows_warnings_and_an_explicit_data_dir_is_searched_alone() {
    let d = Dir::new();
    std::fs::write(d.path("half.flow"), "flow half {\n    input vector(2)\n    net n = mlp(hidden = 4, layers = 1)\n    coupling affine(mask = alternate(even), net = n)\n}\n").unwrap();
    let (code, _, err) = flowc(&[
        "train",
        &d.p("half.flow"),
        "--data",
        "toy:two-moons",
        "--steps",
        "1",
        "--out",
        &d.p("half"),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("warning[untransformed]"), "{err}");
    // Debian's Fashion-MNIST may be installed: a named folder still rules it out.
    std::fs::create_dir(d.path("empty")).unwrap();
    let (code, _, err) = flowc(&[
        "eval",
        &d.p("half"),
        "--data",
        "fashion-mnist",
        "--data-dir",
        &d.p("empty"),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("not found") && !err.contains("/usr/share/datasets/fashion-mnist\n"),
        "{err}"
    );
    let (code, _, err) = flowc(&[
        "eval",
        &d.p("half"),
        "--data",
        "fashion-mnist",
        "--data-dir",
        &d.p("nowhere"),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--data-dir") && err.contains("no such folder"),
        "{err}"
    );
}

#[test]
fn eval_names_the_test_file_it_read() {
    let d = Dir::new();
    let points: Vec<u8> = (0..40)
        .flat_map(|i| [(i as f32 * 0.3).cos(), (i as f32 * 0.3).sin()])
        .flat_map(f32::to_le_bytes)
        .collect();
    common::cli::write_npy(&d.path("a.npy"), "<f4", "40, 2", &points);
    common::cli::write_npy(&d.path("b.npy"), "<f4", "10, 2", &points[..80]);
    let (code, _, err) = d.train("run", &["--steps", "1"]);
    assert_eq!(code, 0, "{err}");
    let (a, b) = (format!("npy:{}", d.p("a.npy")), d.p("b.npy"));
    let (code, out, err) = flowc(&["eval", &d.p("run"), "--data", &a, "--test", &b]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!("on 10 test examples of {b}")),
        "{out}"
    );
    // The test file is part of the data set a resumed run keeps.
    let npy_run = |extra: &[&str]| {
        let flow = d.p("moons.flow");
        let mut args = vec![
            "train", &flow, "--data", &a, "--out", "npyrun", "--batch", "8",
        ];
        args.extend_from_slice(extra);
        common::cli::flowc_in(d.dir.path(), &args)
    };
    let (code, _, err) = npy_run(&["--steps", "1", "--test", &b]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = npy_run(&["--steps", "2", "--resume"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--test (none) (this run was started with"),
        "{err}"
    );
    let (code, _, err) = npy_run(&["--steps", "2", "--resume", "--test", &b]);
    assert_eq!(code, 0, "{err}");
}

/// 20,000 couplings, well inside the language's 100,000-layer limit.
fn deep_flow(layers: usize) -> String {
    let body: String = (0..layers)
        .map(|i| {
            let parity = if i % 2 == 0 { "even" } else { "odd" };
            format!("    coupling affine(mask = alternate({parity}), net = m)\n")
        })
        .collect();
    format!(
        "flow deep {{\n    input vector(2)\n    net m = mlp(hidden = 4, layers = 1)\n{body}}}\n"
    )
}

#[test]
fn a_flow_of_20000_couplings_trains_and_samples() {
    let d = Dir::new();
    std::fs::write(d.path("deep.flow"), deep_flow(20_000)).unwrap();
    // Adam moves every parameter by about --lr a step: over 20,000 layers
    // 1e-3 compounds to exp(20), so the deep flow takes a small rate.
    let (code, _, err) = flowc(&[
        "train",
        &d.p("deep.flow"),
        "--data",
        "toy:two-moons",
        "--steps",
        "1",
        "--batch",
        "8",
        "--lr",
        "1e-7",
        "--eval-examples",
        "8",
        "--out",
        &d.p("deep"),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("trained 1 steps"), "{err}");
    let (code, out, err) = flowc(&["sample", &d.p("deep"), "-n", "3", "-o", "-"]);
    assert_eq!(code, 0, "{err}");
    let values: Vec<f32> = out
        .split([',', '\n'])
        .filter(|v| !v.is_empty())
        .map(|v| v.parse().unwrap())
        .collect();
    assert_eq!(values.len(), 6);
    assert!(
        values.iter().all(|v| v.is_finite() && v.abs() < 10.0),
        "{values:?}"
    );
}

#[test]
fn a_fresh_run_in_a_failed_runs_folder_starts_its_own_files() {
    let d = Dir::new();
    // What a run that died before its first checkpoint leaves.
    std::fs::create_dir(d.path("run")).unwrap();
    std::fs::write(
        d.path("run").join("metrics.jsonl"),
        "{\"step\":1,\"train_bits_per_dim\":9.0,\"images_per_s\":1.0}\n{\"step\":2,",
    )
    .unwrap();
    std::fs::write(d.path("run").join("state.json"), "{}").unwrap();
    std::fs::write(d.path("run").join("model.flow"), "flow old { }").unwrap();
    let (code, _, err) = d.train("run", &["--steps", "3"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(logged_steps(&d.path("run")), vec![1, 2, 3]);
    assert_eq!(
        std::fs::read_to_string(d.path("run").join("model.flow")).unwrap(),
        MOONS
    );
    assert_eq!(checkpoint_step(&d.path("run")), 3);
}
