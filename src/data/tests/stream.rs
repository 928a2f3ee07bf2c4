//! Streamed splits against the in-memory loaders on files made here: the
//! same examples for the same indices, the queue and the member cache within
//! their bounds (counters, not timings), corrupt files mid-stream, and
//! loader errors and panics that reach the consumer instead of hanging it.

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use image::{ImageBuffer, Rgb, RgbImage};

use crate::data::{
    load_with, open_with, Data, DataError, Examples, Fetched, LoadOptions, Order, Resize, Source,
    Split, Streamed, MEMBER_CACHE,
};
use crate::train::order::{epoch_order, BatchPlan};

fn opts(stream: bool, strict: bool) -> LoadOptions {
    LoadOptions {
        target: Some([3, 8, 8]),
        resize: Resize::Crop,
        strict_images: strict,
        stream,
    }
}

/// Two class folders of PNG and JPEG images of several sizes.
fn write_folder(root: &Path, per_class: u32) {
    for class in ["cat", "dog"] {
        let dir = root.join(class);
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..per_class {
            let (w, h) = (10 + i % 5, 9 + i % 3);
            let img: RgbImage = ImageBuffer::from_fn(w, h, |x, y| {
                Rgb([
                    (x * 17 + i) as u8,
                    (y * 23 + 3 * i) as u8,
                    class.len() as u8 * 30,
                ])
            });
            let ext = if i % 2 == 0 { "png" } else { "jpg" };
            img.save(dir.join(format!("{i:03}.{ext}"))).unwrap();
        }
    }
}

fn open_folder(root: &Path, o: &LoadOptions) -> Result<Data, DataError> {
    let spec = format!("folder:{}", root.display());
    open_with(&spec, Path::new("/nonexistent"), false, None, 3, o)
}

fn memory(split: &Split) -> &Examples {
    match split {
        Split::Memory(ex) => ex,
        Split::Streamed(_) => panic!("expected an in-memory split"),
    }
}

/// Every batch of `plan` read through the loader thread.
fn all_batches(split: &Split, plan: BatchPlan, depth: usize) -> Vec<Fetched> {
    split
        .batches(Box::new(plan), depth)
        .map(|b| b.unwrap())
        .collect()
}

#[test]
fn a_streamed_folder_gives_the_in_memory_examples_for_the_same_indices() {
    let dir = tempfile::tempdir().unwrap();
    write_folder(dir.path(), 12);
    let mem = open_folder(dir.path(), &opts(false, false)).unwrap();
    let streamed = open_folder(dir.path(), &opts(true, false)).unwrap();
    assert!(!mem.train.is_streamed() && streamed.train.is_streamed());
    assert!(streamed.source.contains("streamed"), "{}", streamed.source);
    assert_eq!(streamed.train.len(), mem.train.len());
    assert_eq!(streamed.test.len(), mem.test.len());
    assert_eq!(streamed.labels, mem.labels);
    assert_eq!(streamed.order, Order::Shuffled);
    assert_eq!(streamed.train.describe_example(), "uint8 3x8x8");
    // The batches of 7 steps (over two epochs) through the loader thread.
    let n = mem.train.len();
    let plan = || BatchPlan::new(Order::Shuffled, 3, 5, n, 0, 7);
    let got = all_batches(&streamed.train, plan(), 2);
    assert_eq!(got.len(), 7);
    for (f, idx) in got.iter().zip(plan()) {
        assert!(f.skipped.is_empty());
        assert_eq!(f.examples, memory(&mem.train).select(&idx));
    }
    // The test split, in order, as evaluation reads it.
    let all: Vec<usize> = (0..mem.test.len()).collect();
    assert_eq!(
        streamed.test.fetch(&all).unwrap().examples,
        *memory(&mem.test)
    );
    // The first k of a stream, as evaluation during training reads it.
    let head = streamed.train.head(4);
    assert_eq!(head.len(), 4);
    assert_eq!(
        head.fetch(&[0, 1, 2, 3]).unwrap().examples,
        memory(&mem.train).select(&[0, 1, 2, 3])
    );
}

#[test]
fn small_sets_stay_in_memory_unless_streaming_is_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    write_folder(dir.path(), 3);
    let d = open_folder(dir.path(), &opts(false, false)).unwrap();
    let spec = format!("folder:{}", dir.path().display());
    let loaded = load_with(&spec, Path::new("/x"), false, None, 3, &opts(false, false)).unwrap();
    assert_eq!(d, Data::from(loaded));
    // The small built-in sets never stream.
    let toy = open_with(
        "toy:two-moons",
        Path::new("/x"),
        false,
        None,
        0,
        &opts(true, false),
    );
    assert!(!toy.unwrap().train.is_streamed());
}

#[test]
fn a_corrupt_file_mid_stream_is_named_once_and_counted_or_stops_strict() {
    let dir = tempfile::tempdir().unwrap();
    write_folder(dir.path(), 6);
    let bad = dir.path().join("dog").join("002.jpg");
    std::fs::write(&bad, [0xff, 0xd8, 0xff, 0x00, 1, 2]).unwrap();
    let d = open_folder(dir.path(), &opts(true, false)).unwrap();
    let strict = open_folder(dir.path(), &opts(true, true)).unwrap();
    // The split the 90/10 draw put it in, and its index there: the one
    // whose lone fetch fails.
    let lone_fails = |s: &Split| (0..s.len()).find(|&i| s.fetch(&[i]).is_err());
    let (split, strict_split, at) = match lone_fails(&d.train) {
        Some(at) => (&d.train, &strict.train, at),
        None => (
            &d.test,
            &strict.test,
            lone_fails(&d.test).expect("in one split"),
        ),
    };
    let n = split.len();
    let all: Vec<usize> = (0..n).collect();
    let f = split.fetch(&all).unwrap();
    assert_eq!(f.examples.len(), n - 1);
    // The indices of the examples that decoded: all but the bad file's.
    let decoded: Vec<usize> = all.iter().copied().filter(|&i| i != at).collect();
    assert_eq!(f.indices, decoded);
    assert_eq!(f.skipped.len(), 1);
    assert_eq!((f.skipped[0].index, &f.skipped[0].path), (at, &bad));
    let lines = split.note_skips(&f.skipped);
    assert_eq!(lines.len(), 1);
    assert!(lines[0].contains("002.jpg"), "{}", lines[0]);
    // The next epoch meets it again: counted once, not named again.
    assert!(split.note_skips(&f.skipped).is_empty());
    assert_eq!(split.skipped_count(), 1);
    // A batch of nothing but it is an error naming it.
    let err = split.fetch(&[at]).unwrap_err();
    assert!(matches!(err, DataError::BatchNoneDecoded { .. }), "{err}");
    assert!(err.to_string().contains("002.jpg"), "{err}");

    // --strict-images: the batch holding it stops the stream with its name.
    let plan: Vec<Vec<usize>> = vec![vec![(at + 1) % n], all.clone(), vec![0]];
    let got: Vec<_> = strict_split
        .batches(Box::new(plan.into_iter()), 2)
        .collect();
    assert_eq!(got.len(), 2, "the stream ends at the error");
    assert!(got[0].is_ok());
    let err = got[1].as_ref().unwrap_err();
    assert!(
        matches!(err, DataError::BadImage { path, .. } if *path == bad),
        "{err}"
    );
}

/// A source of 1x1x1 images whose value is the index, that fails or panics
/// at one index, and counts its fetches.
#[derive(Debug)]
struct Counting {
    n: usize,
    fail_at: Option<usize>,
    panic_at: Option<usize>,
    fetches: Arc<AtomicUsize>,
}

impl Source for Counting {
    fn len(&self) -> usize {
        self.n
    }
    fn example_shape(&self) -> [usize; 3] {
        [1, 1, 1]
    }
    fn fetch(&self, indices: &[usize]) -> Result<Fetched, DataError> {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        if indices.iter().any(|&i| Some(i) == self.panic_at) {
            panic!("decoder bug at {}", self.panic_at.unwrap_or(0));
        }
        if indices.iter().any(|&i| Some(i) == self.fail_at) {
            return Err(DataError::Archive {
                path: "x.npz".into(),
                reason: "member gone".into(),
            });
        }
        Ok(Fetched {
            examples: Examples::Images {
                data: indices.iter().map(|&i| i as u8).collect(),
                n: indices.len(),
                c: 1,
                h: 1,
                w: 1,
            },
            indices: indices.to_vec(),
            skipped: Vec::new(),
        })
    }
}

fn counting(
    n: usize,
    fail_at: Option<usize>,
    panic_at: Option<usize>,
) -> (Split, Arc<AtomicUsize>) {
    let fetches = Arc::new(AtomicUsize::new(0));
    let src = Counting {
        n,
        fail_at,
        panic_at,
        fetches: fetches.clone(),
    };
    (
        Split::Streamed(Arc::new(Streamed::new(Box::new(src)))),
        fetches,
    )
}

/// Waits (without a deadline on the outcome) until `cond` holds, giving up
/// after a long time only so that a broken loader fails instead of hanging.
fn wait_for(cond: impl Fn() -> bool) -> bool {
    for _ in 0..20_000 {
        if cond() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    cond()
}

#[test]
fn the_queue_never_holds_more_than_its_depth() {
    let (split, fetches) = counting(100, None, None);
    let plan = (0..40).map(|b| vec![b, b + 50]);
    let depth = 3;
    let mut batches = split.batches(Box::new(plan), depth);
    let first = batches.next().unwrap().unwrap();
    assert_eq!(first.examples.len(), 2);
    // The loader runs ahead until `depth` batches wait, and no further.
    let counters = || batches.counters().unwrap();
    assert!(wait_for(|| counters().ready() == depth));
    assert_eq!(fetches.load(Ordering::SeqCst), 1 + depth);
    let mut seen = 1;
    for (k, b) in batches.by_ref().enumerate() {
        let Examples::Images { data, .. } = b.unwrap().examples else {
            panic!("images");
        };
        assert_eq!(data, vec![(k + 1) as u8, (k + 51) as u8], "in order");
        seen += 1;
    }
    assert_eq!(seen, 40);
    let c = batches.counters().unwrap();
    assert!(c.max_ready() <= depth, "{} > {depth}", c.max_ready());
    assert_eq!(c.decoded(), 40);
}

#[test]
fn loader_errors_and_panics_reach_the_consumer_and_end_the_stream() {
    let (split, fetches) = counting(10, Some(4), None);
    let plan = (0..10).map(|i| vec![i]);
    let got: Vec<_> = split.batches(Box::new(plan), 2).collect();
    assert_eq!(got.len(), 5);
    assert!(got[..4].iter().all(|b| b.is_ok()));
    assert!(matches!(got[4], Err(DataError::Archive { .. })));
    assert_eq!(
        fetches.load(Ordering::SeqCst),
        5,
        "nothing read past the error"
    );

    let (split, _) = counting(10, None, Some(2));
    let got: Vec<_> = split
        .batches(Box::new((0..10).map(|i| vec![i])), 2)
        .collect();
    assert_eq!(got.len(), 3);
    let err = got[2].as_ref().unwrap_err();
    assert!(err.to_string().contains("decoder bug at 2"), "{err}");

    // An index past the end (never made by the training plan) is an error too.
    let (split, _) = counting(3, None, None);
    let mut b = split.batches(Box::new(std::iter::once(vec![0, 7])), 1);
    assert!(matches!(
        b.next(),
        Some(Err(DataError::LoaderStopped { .. }))
    ));
    assert!(b.next().is_none());
}

#[test]
fn dropping_the_batches_mid_stream_stops_the_loader() {
    let (split, fetches) = counting(10, None, None);
    let endless = (0..).map(|i| vec![i % 10]);
    let mut batches = split.batches(Box::new(endless), 2);
    for _ in 0..3 {
        batches.next().unwrap().unwrap();
    }
    // Returns once the thread has ended (a loader that ignored the closed
    // channel would hang here), having read at most `depth` batches ahead.
    drop(batches);
    let after = fetches.load(Ordering::SeqCst);
    assert!(after <= 3 + 2 + 1, "{after}");
}

/// An `.npz` of `n` 32x32 images (value `base + position`), data stored or deflated.
fn npz(n: usize, base: usize, deflate: bool) -> Vec<u8> {
    let row = 3 * 32 * 32;
    let data: Vec<u8> = (0..n * row).map(|k| ((base + k) % 251) as u8).collect();
    let labels: Vec<u8> = (0..n)
        .flat_map(|i| (1 + (base + i) as i64 % 1000).to_le_bytes())
        .collect();
    let method = if deflate {
        zip::CompressionMethod::Deflated
    } else {
        zip::CompressionMethod::Stored
    };
    let o = zip::write::SimpleFileOptions::default().compression_method(method);
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    w.start_file("data.npy", o).unwrap();
    w.write_all(&super::util::npy("|u1", &[n, row], &data))
        .unwrap();
    w.start_file("labels.npy", o).unwrap();
    w.write_all(&super::util::npy("<i8", &[n], &labels))
        .unwrap();
    w.finish().unwrap().into_inner()
}

/// An `imagenet32` laid out as the release: ten batch files of 3..=7 images.
fn write_imagenet(dir: &Path) -> Vec<usize> {
    write_imagenet_of(dir, |b| 3 + b % 5)
}

/// An `imagenet32` of ten batch files, file `b` (1..=10) of `size(b)` images.
fn write_imagenet_of(dir: &Path, size: impl Fn(usize) -> usize) -> Vec<usize> {
    let folder = dir.join("imagenet32");
    std::fs::create_dir_all(&folder).unwrap();
    let mut sizes = Vec::new();
    for b in 1..=10usize {
        let n = size(b);
        let bytes = npz(n, b * 1000, b % 2 == 0);
        std::fs::write(folder.join(format!("train_data_batch_{b}.npz")), bytes).unwrap();
        sizes.push(n);
    }
    std::fs::write(folder.join("val_data.npz"), npz(5, 7, true)).unwrap();
    sizes
}

fn open_imagenet(dir: &Path, stream: bool) -> Result<Data, DataError> {
    let o = LoadOptions {
        stream,
        ..LoadOptions::default()
    };
    open_with("imagenet32", dir, false, None, 0, &o)
}

#[test]
fn streamed_npz_batches_equal_memory_and_decode_each_member_once_an_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let sizes = write_imagenet(dir.path());
    let mem = open_imagenet(dir.path(), false).unwrap();
    let streamed = open_imagenet(dir.path(), true).unwrap();
    assert!(!mem.train.is_streamed() && streamed.train.is_streamed());
    // One order whether streamed or not: a file at a time.
    assert_eq!(mem.order, Order::Blocks(sizes.clone()));
    assert_eq!(streamed.order, mem.order);
    assert_eq!(streamed.labels, mem.labels);
    let n: usize = sizes.iter().sum();
    assert_eq!(streamed.train.len(), n);
    // Two epochs at batch 4 (batches straddle files).
    let steps = (2 * n).div_ceil(4) as u64;
    let plan = || BatchPlan::new(mem.order.clone(), 9, 4, n, 0, steps);
    let got = all_batches(&streamed.train, plan(), 3);
    for (f, idx) in got.iter().zip(plan()) {
        assert_eq!(f.examples, memory(&mem.train).select(&idx));
    }
    let stats = streamed.train.cache_stats().unwrap();
    assert!(stats.max_resident <= MEMBER_CACHE, "{stats:?}");
    // Each file decoded once an epoch (plus at most one reread where an
    // epoch's last file is not the next epoch's first).
    assert!(stats.loads <= 2 * sizes.len() + 1, "{stats:?}");
    // The test file, in order, one member held.
    let all: Vec<usize> = (0..5).collect();
    assert_eq!(
        streamed.test.fetch(&all).unwrap().examples,
        *memory(&mem.test)
    );
}

#[test]
fn the_next_npz_member_is_decoded_ahead_while_the_current_one_is_read() {
    let dir = tempfile::tempdir().unwrap();
    // Files of 6 images read in batches of 2: each spans three batches.
    let sizes = write_imagenet_of(dir.path(), |_| 6);
    let mem = open_imagenet(dir.path(), false).unwrap();
    let streamed = open_imagenet(dir.path(), true).unwrap();
    let n: usize = sizes.iter().sum();
    let plan = || BatchPlan::new(mem.order.clone(), 4, 2, n, 0, n as u64); // two epochs
    let got = all_batches(&streamed.train, plan(), 3);
    for (f, idx) in got.iter().zip(plan()) {
        assert_eq!(f.examples, memory(&mem.train).select(&idx));
    }
    let stats = streamed.train.cache_stats().unwrap();
    assert!(stats.max_resident <= MEMBER_CACHE, "{stats:?}");
    // Every file decoded at most once an epoch (fewer where the next
    // epoch starts with a file still held), and all but the very first
    // ahead of its batches: a batch that reaches a file waits for its
    // decode under way (or finds it done) instead of decoding it again.
    assert!(stats.loads <= 20, "{stats:?}");
    assert_eq!(stats.ahead, stats.loads - 1, "{stats:?}");
}

#[test]
fn the_block_order_is_a_permutation_one_file_at_a_time() {
    let sizes = vec![3, 1, 4, 2];
    let order = Order::Blocks(sizes.clone());
    for epoch in 0..3 {
        let p = epoch_order(&order, 5, epoch, 10);
        let mut sorted = p.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..10).collect::<Vec<_>>());
        // Consecutive runs lie within one file.
        let file = |i: usize| match i {
            0..=2 => 0,
            3 => 1,
            4..=7 => 2,
            _ => 3,
        };
        let mut changes = 0;
        for w in p.windows(2) {
            changes += usize::from(file(w[0]) != file(w[1]));
        }
        assert_eq!(changes, sizes.len() - 1, "{p:?}");
    }
    assert_ne!(epoch_order(&order, 5, 0, 10), epoch_order(&order, 5, 1, 10));
}

#[test]
fn a_resumed_plan_continues_where_the_unbroken_one_is() {
    for order in [Order::Shuffled, Order::Blocks(vec![4, 7, 2])] {
        let whole: Vec<Vec<usize>> = BatchPlan::new(order.clone(), 1, 5, 13, 0, 9).collect();
        let tail: Vec<Vec<usize>> = BatchPlan::new(order.clone(), 1, 5, 13, 4, 9).collect();
        assert_eq!(whole.len(), 9);
        assert_eq!(&whole[4..], &tail[..]);
    }
    // The shuffled order is the one runs before streaming used: a seeded
    // permutation per epoch.
    let first = BatchPlan::new(Order::Shuffled, 1, 13, 13, 0, 1)
        .next()
        .unwrap();
    assert_eq!(
        first,
        crate::train::rng::Rng::keyed(1, crate::train::rng::SHUFFLE, 0).permutation(13)
    );
}

#[test]
fn an_npz_that_changes_or_vanishes_while_streaming_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    write_imagenet(dir.path());
    let d = open_imagenet(dir.path(), true).unwrap();
    let folder = dir.path().join("imagenet32");
    std::fs::write(folder.join("train_data_batch_1.npz"), npz(2, 0, false)).unwrap();
    let err = d.train.fetch(&[0]).unwrap_err();
    assert!(err.to_string().contains("changed"), "{err}");
    std::fs::remove_file(folder.join("train_data_batch_1.npz")).unwrap();
    let got: Vec<_> = d
        .train
        .batches(Box::new(std::iter::once(vec![0])), 2)
        .collect();
    assert_eq!(got.len(), 1);
    assert!(got[0].is_err());
}
