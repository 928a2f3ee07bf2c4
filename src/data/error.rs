//! The one error type of the data loaders.
//!
//! Every message says what was found, what was expected, and where (the file,
//! or for a member of a tarball `TARBALL/MEMBER`).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use thiserror::Error;

/// Why a data set could not be loaded.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum DataError {
    /// `--data` named no known data set.
    #[error(
        "unknown data set `{spec}`: expected one of cifar10, mnist, fashion-mnist, imagenet32, \
         imagenet64, celeba, folder:PATH (a folder of PNG/JPEG images), npy:PATH (a .npy file), \
         or toy:NAME with NAME one of {}",
        crate::data::toy::TOY_NAMES.join(", ")
    )]
    UnknownSpec {
        /// The spec as given.
        spec: String,
    },

    /// `toy:NAME` with an unknown NAME.
    #[error(
        "unknown toy data set `{name}`: expected one of {}",
        crate::data::toy::TOY_NAMES.join(", ")
    )]
    UnknownToy {
        /// The name as given.
        name: String,
    },

    /// A separate test file was given for a data set that has its own test split.
    #[error(
        "a separate test file or folder ({}) only applies to npy:PATH and folder:PATH data sets; `{spec}` has its own test split",
        .test_file.display()
    )]
    TestFileNotApplicable {
        /// The data set spec.
        spec: String,
        /// The test file given.
        test_file: PathBuf,
    },

    /// None of the places a data set may be in holds it.
    #[error("{0}")]
    NotFound(Box<NotFound>),

    /// The operating system refused to read a file.
    #[error("cannot read {}: {source}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A file that starts like gzip (1f 8b) could not be decompressed.
    #[error("{}: starts with the gzip magic bytes 1f 8b but is not a valid gzip stream: {source}", .path.display())]
    Gzip {
        /// The file.
        path: PathBuf,
        /// What flate2 said.
        #[source]
        source: std::io::Error,
    },

    /// A tarball could not be read, or lacks members.
    #[error("{}: {reason}", .path.display())]
    Archive {
        /// The tarball.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// A file of fixed-size records whose length is not a whole number of records.
    #[error(
        "{}: size {len} bytes is not a multiple of the {record}-byte {what} record \
         ({len} = {} x {record} + {})",
        .path.display(), .len / *.record as u64, .len % *.record as u64
    )]
    BadRecordSize {
        /// The file.
        path: PathBuf,
        /// Its length in bytes.
        len: u64,
        /// The record size expected.
        record: usize,
        /// Which record (e.g. `CIFAR-10 (1 label byte + 3072 pixel bytes)`).
        what: String,
    },

    /// A CIFAR-10 record whose label byte is not 0..=9 (so not a CIFAR-10 batch file).
    #[error(
        "{}: record {record} has label byte {label}, expected 0..=9 for CIFAR-10 \
         (is this a CIFAR-10 binary batch file?)",
        .path.display()
    )]
    BadLabel {
        /// The file.
        path: PathBuf,
        /// The index of the record (from 0).
        record: usize,
        /// The label byte found.
        label: u8,
    },

    /// A label that is not one of the data set's classes (or not an integer
    /// label at all: negative, or too large for a class index).
    #[error("{}: label {index} is {value}, expected {expected}", .path.display())]
    BadLabelValue {
        /// The label file.
        path: PathBuf,
        /// The index of the example (from 0).
        index: usize,
        /// The label found.
        value: i64,
        /// What labels the file may hold (e.g. `0..=9 for Fashion-MNIST`).
        expected: String,
    },

    /// A label file whose count does not match its images.
    #[error(
        "{}: {found} labels, expected {expected}, one per image of {}",
        .path.display(), .images.display()
    )]
    LabelCount {
        /// The label file.
        path: PathBuf,
        /// Labels in it.
        found: usize,
        /// Images they label.
        expected: usize,
        /// Where the images are.
        images: PathBuf,
    },

    /// `--labels` or `--test-labels` for a data set that brings its own labels
    /// (or has none to give), or `--test-labels` without `--test`.
    #[error("{option} {}: {why}", .file.display())]
    LabelsNotApplicable {
        /// `--labels` or `--test-labels`.
        option: &'static str,
        /// The file given.
        file: PathBuf,
        /// Why it does not apply.
        why: String,
    },

    /// A file that does not start with the magic number of its format.
    #[error(
        "{}: bad magic number {found}, expected {expected} ({format})",
        .path.display()
    )]
    BadMagic {
        /// The file.
        path: PathBuf,
        /// The bytes found, as hex (e.g. `0x00000801`).
        found: String,
        /// The bytes expected, as hex.
        expected: String,
        /// What the expected magic stands for.
        format: String,
    },

    /// A file shorter than its header says.
    #[error(
        "{}: truncated: {what}, so {expected} bytes should follow the header, but only {found} do",
        .path.display()
    )]
    Truncated {
        /// The file.
        path: PathBuf,
        /// What the header says (e.g. `IDX header says 60000 images of 28x28`).
        what: String,
        /// Bytes the header implies.
        expected: u64,
        /// Bytes present.
        found: u64,
    },

    /// A file shorter than the header itself.
    #[error(
        "{}: file is {found} bytes long, too short for {what} ({needed} bytes)",
        .path.display()
    )]
    TooShort {
        /// The file.
        path: PathBuf,
        /// What could not fit (e.g. `a 16-byte IDX image header`).
        what: String,
        /// Bytes needed.
        needed: u64,
        /// Bytes present.
        found: u64,
    },

    /// A file longer than its header says.
    #[error(
        "{}: {what}, so {expected} bytes should follow the header, but {found} do \
         ({} bytes too many)",
        .path.display(), .found - .expected
    )]
    TrailingBytes {
        /// The file.
        path: PathBuf,
        /// What the header says.
        what: String,
        /// Bytes the header implies.
        expected: u64,
        /// Bytes present (more than `expected`).
        found: u64,
    },

    /// A well-formed file with no examples in it.
    #[error("{}: holds no examples ({what}); expected at least one", .path.display())]
    Empty {
        /// The file.
        path: PathBuf,
        /// What it holds (e.g. `IDX header says 0 images`).
        what: String,
    },

    /// A `.npy` file whose header cannot be parsed.
    #[error("{}: bad .npy header: {reason}", .path.display())]
    NpyHeader {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// A `.npy` file of an element type the loader does not take.
    #[error(
        "{}: .npy dtype {found} is not supported: expected '|u1' (uint8 images, N x C x H x W) \
         or '<f4' / '<f8' (float32 / float64 vectors, N x D)",
        .path.display()
    )]
    NpyDtype {
        /// The `descr` found.
        found: String,
        /// The file.
        path: PathBuf,
    },

    /// A `.npy` file of the wrong number of dimensions for its element type.
    #[error(
        "{}: .npy array of dtype {dtype} has shape {shape:?} ({} dims), expected {expected}",
        .path.display(), .shape.len()
    )]
    NpyNdim {
        /// The file.
        path: PathBuf,
        /// The `descr`.
        dtype: String,
        /// The shape found.
        shape: Vec<u64>,
        /// What was expected.
        expected: String,
    },

    /// A `.npy` file stored in Fortran (column-major) order.
    #[error(
        "{}: .npy array is stored in Fortran order (fortran_order: True), expected C order; \
         save it with numpy.ascontiguousarray(a)",
        .path.display()
    )]
    NpyFortranOrder {
        /// The file.
        path: PathBuf,
    },

    /// A float data file holding NaN or an infinity.
    #[error(
        "{}: element {index} is {value}, expected only finite numbers",
        .path.display()
    )]
    NonFinite {
        /// The file.
        path: PathBuf,
        /// The flat index of the first bad element.
        index: usize,
        /// Its value.
        value: f64,
    },

    /// Train and test examples of different kinds or shapes.
    #[error(
        "train examples ({}) have shape {train_shape}, but test examples ({}) have shape {test_shape}; \
         expected the same",
        .train_path.display(), .test_path.display()
    )]
    ShapeMismatch {
        /// Where the train examples came from.
        train_path: PathBuf,
        /// Their per-example shape (e.g. `uint8 1x28x28`).
        train_shape: String,
        /// Where the test examples came from.
        test_path: PathBuf,
        /// Their per-example shape.
        test_shape: String,
    },

    /// A file too small to be split into train and test.
    #[error(
        "{}: holds {n} example(s), too few to split 90/10 into train and test (need at least 2); \
         give a separate test file",
        .path.display()
    )]
    TooFewToSplit {
        /// The file.
        path: PathBuf,
        /// Number of examples.
        n: usize,
    },
    /// A path given as an image folder that is not a folder.
    #[error("{}: not a folder (folder:PATH wants a folder of PNG/JPEG images)", .path.display())]
    NotAFolder {
        /// The path.
        path: PathBuf,
    },

    /// An image folder with no PNG or JPEG file under it.
    #[error(
        "{}: holds no images (looked for .png, .jpg and .jpeg files in it and every folder under it); \
         expected at least one",
        .path.display()
    )]
    NoImages {
        /// The folder.
        path: PathBuf,
    },

    /// An image folder with class subfolders and also images beside them.
    #[error(
        "{}: has {classes} class subfolder(s) and also {count} image(s) directly in it (e.g. {}); \
         put every image in a class subfolder, or none",
        .path.display(), .example.display()
    )]
    LooseImages {
        /// The folder.
        path: PathBuf,
        /// One of the images directly in it.
        example: PathBuf,
        /// How many there are.
        count: usize,
        /// How many class subfolders.
        classes: usize,
    },

    /// None of a split's image files decodes.
    #[error("{}: none of its {count} image file(s) for this split decodes", .path.display())]
    NoneDecoded {
        /// The folder.
        path: PathBuf,
        /// How many were tried.
        count: usize,
    },

    /// An image that does not decode, with `--strict-images`.
    #[error("{}: cannot decode the image: {reason} (without --strict-images it is skipped)", .path.display())]
    BadImage {
        /// The file.
        path: PathBuf,
        /// What the decoder said.
        reason: String,
    },

    /// Every image of one streamed batch failed to decode (a folder that is
    /// mostly corrupt; the files are named above it as they fail).
    #[error(
        "none of the {count} image file(s) of a batch decodes (the first: {}: {reason})",
        .first.display()
    )]
    BatchNoneDecoded {
        /// How many the batch had.
        count: usize,
        /// The first of them.
        first: PathBuf,
        /// Why it did not decode.
        reason: String,
    },

    /// The thread that decodes batches ahead of the step stopped without
    /// a result (a decoder panicked on a file).
    #[error("the data loader stopped: {reason}")]
    LoaderStopped {
        /// What happened.
        reason: String,
    },

    /// An image data set loaded without the flow's input shape.
    #[error(
        "data set `{spec}` is resized to the flow's input shape, and none was given \
         (this command does not know the flow's input)"
    )]
    NeedsTarget {
        /// The data set spec.
        spec: String,
    },

    /// An image data set for a flow whose input is not 1 or 3 channels.
    #[error(
        "data set `{spec}` gives grey (1 channel) or RGB (3 channel) images, but the flow's input \
         is image({c}, {h}, {w})"
    )]
    ImageTarget {
        /// The data set spec.
        spec: String,
        /// Channels of the flow's input.
        c: usize,
        /// Its height.
        h: usize,
        /// Its width.
        w: usize,
    },

    /// A test folder with a class that the training folder lacks.
    #[error(
        "test folder {} has class `{class}`, which the training folder {} lacks; \
         expected the same class subfolders",
        .test.display(), .train.display()
    )]
    UnknownClass {
        /// The test folder.
        test: PathBuf,
        /// The class.
        class: String,
        /// The training folder.
        train: PathBuf,
    },

    /// A line of CelebA's partition file that is not `NAME K` with K 0, 1 or 2.
    #[error("{}:{line}: `{text}`: expected `FILE K` with K 0 (train), 1 (valid) or 2 (test)", .path.display())]
    BadPartition {
        /// The partition file.
        path: PathBuf,
        /// The line number (from 1).
        line: usize,
        /// The line.
        text: String,
    },

    /// Images named in CelebA's partition file that are not in the folder.
    #[error(
        "{} lists {count} image(s) that are not in {} (the first: {first})",
        .partition.display(), .dir.display()
    )]
    PartitionMissing {
        /// The partition file.
        partition: PathBuf,
        /// The image folder.
        dir: PathBuf,
        /// The first missing name.
        first: String,
        /// How many are missing.
        count: usize,
    },
}

impl DataError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Where a data set was looked for (the payload of [`DataError::NotFound`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotFound {
    /// The data set's display name (e.g. `CIFAR-10`).
    pub dataset: String,
    /// Every file name looked for (in each of `dirs`).
    pub files: Vec<String>,
    /// Every folder looked in, in order.
    pub dirs: Vec<PathBuf>,
    /// Folders that held some of the files but not all: (folder, missing names).
    pub incomplete: Vec<(PathBuf, Vec<String>)>,
    /// Archives looked for (e.g. `cifar-10-binary.tar.gz`).
    pub archives: Vec<PathBuf>,
    /// Where the official files come from.
    pub get_it: String,
}

impl std::fmt::Display for NotFound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let NotFound {
            dataset,
            files,
            dirs,
            incomplete,
            archives,
            get_it,
        } = self;
        f.write_str(&not_found_message(
            dataset, files, dirs, incomplete, archives, get_it,
        ))
    }
}

fn not_found_message(
    dataset: &str,
    files: &[String],
    dirs: &[PathBuf],
    incomplete: &[(PathBuf, Vec<String>)],
    archives: &[PathBuf],
    get_it: &str,
) -> String {
    let mut m = format!("{dataset} not found: looked for {}", files.join(", "));
    m.push_str(" in these folders:");
    for d in dirs {
        let _ = write!(m, "\n  {}", d.display());
        if let Some((_, missing)) = incomplete.iter().find(|(p, _)| p == d) {
            let _ = write!(
                m,
                " (has some of the files, but lacks {})",
                missing.join(", ")
            );
        }
    }
    if !archives.is_empty() {
        m.push_str("\nand for the archive");
        if archives.len() > 1 {
            m.push('s');
        }
        for a in archives {
            let _ = write!(m, "\n  {}", a.display());
        }
    }
    let _ = write!(m, "\n{get_it}");
    m
}
