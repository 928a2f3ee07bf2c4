//! Per-example tensor shapes and how each layer changes them.

use std::fmt;

use serde::{Serialize, Serializer};

/// The shape of one example; the batch dimension is left out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Shape {
    /// `image(C, H, W)`, channels first.
    Image { c: u64, h: u64, w: u64 },
    /// `vector(D)`.
    Vector { d: u64 },
}

impl Shape {
    /// Channels of an image, features of a vector: what masks, `reverse` and
    /// `factor_out` split.
    pub fn channels(&self) -> u64 {
        match *self {
            Shape::Image { c, .. } => c,
            Shape::Vector { d } => d,
        }
    }
    /// Values per example (at most u64::MAX: the resolver refuses larger inputs,
    /// and no layer grows the count).
    pub fn size(&self) -> u128 {
        match *self {
            Shape::Image { c, h, w } => c as u128 * h as u128 * w as u128,
            Shape::Vector { d } => d as u128,
        }
    }
    /// Positions per channel: H x W for images, 1 for vectors.
    pub fn positions(&self) -> u128 {
        match *self {
            Shape::Image { h, w, .. } => h as u128 * w as u128,
            Shape::Vector { .. } => 1,
        }
    }
    pub fn is_image(&self) -> bool {
        matches!(self, Shape::Image { .. })
    }
    /// The same shape with `channels` channels (features).
    pub fn with_channels(&self, channels: u64) -> Shape {
        match *self {
            Shape::Image { h, w, .. } => Shape::Image { c: channels, h, w },
            Shape::Vector { .. } => Shape::Vector { d: channels },
        }
    }
    pub fn dims(&self) -> Vec<u64> {
        match *self {
            Shape::Image { c, h, w } => vec![c, h, w],
            Shape::Vector { d } => vec![d],
        }
    }
}

/// `3x32x32` for images, `2` for vectors.
impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Shape::Image { c, h, w } => write!(f, "{c}x{h}x{w}"),
            Shape::Vector { d } => write!(f, "{d}"),
        }
    }
}

/// As a JSON array, `[3, 32, 32]` or `[2]`, as LANGUAGE.md shows.
impl Serialize for Shape {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.dims().serialize(s)
    }
}
