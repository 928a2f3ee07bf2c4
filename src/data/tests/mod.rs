//! Tests of the loaders on data they make in temporary folders.

mod cifar;
mod fashion_real;
mod fuzz;
mod idx;
mod images;
mod labels;
mod npy;
mod numpy_fixtures;
mod spec;
mod stream;
mod toy;
mod util;
