//! The intermediate representation's shared types: what every stage from
//! resolve to the executor means by a layer's parts (priors, masks and
//! their parities, coupling kinds, conditioner nets), defined once here and
//! imported, never redefined; and [`params`], the one place parameter
//! counts are computed. A leaf: it imports no stage.

pub mod params;

use serde::Serialize;

/// The prior of the latents (`prior DIST`), as written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Prior {
    Normal,
    Logistic,
    /// `normal(learned)`: each latent `z ~ N(m, exp(s)^2)` with a learned
    /// `(m, s)` per channel (feature), both starting at 0. Their tensors are
    /// `[1, C]`: one row per class, a single row without a condition.
    LearnedNormal,
}

impl Prior {
    /// As written in a `.flow` file.
    pub fn as_str(self) -> &'static str {
        match self {
            Prior::Normal => "normal",
            Prior::Logistic => "logistic",
            Prior::LearnedNormal => "normal(learned)",
        }
    }

    /// The fixed distribution a latent's values follow once standardized by
    /// a learned prior (`(z - m) exp(-s)`): the prior itself when fixed.
    pub fn base(self) -> Base {
        match self {
            Prior::Normal | Prior::LearnedNormal => Base::Normal,
            Prior::Logistic => Base::Logistic,
        }
    }
}

/// A fixed, parameter-free distribution of one latent value: what the
/// executor scores and draws the plan's latents from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Base {
    /// The standard normal.
    Normal,
    /// The standard logistic (NICE).
    Logistic,
}

/// What a conditioned flow (`input SHAPE given class(K)`, version 2) is
/// given besides `x`: a class label `y` in `0..classes`. Every conditioner
/// net also receives it, one-hot, as `classes` extra input channels
/// (features).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Condition {
    #[serde(rename = "class")]
    pub classes: u32,
}

impl Condition {
    /// The largest K flowc takes: the one-hot planes are a net's input.
    pub const MAX_CLASSES: u64 = 65_536;

    /// Channels (features) the label adds to a conditioner net's input.
    pub fn label_channels(condition: Option<Condition>) -> u64 {
        condition.map_or(0, |c| u64::from(c.classes))
    }
}

/// Which of a mask's two halves is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Parity {
    Even,
    Odd,
}

impl Parity {
    pub fn as_str(self) -> &'static str {
        match self {
            Parity::Even => "even",
            Parity::Odd => "odd",
        }
    }

    /// The other parity.
    pub fn flip(self) -> Self {
        match self {
            Parity::Even => Parity::Odd,
            Parity::Odd => Parity::Even,
        }
    }
}

/// The four mask patterns of LANGUAGE.md, without their parity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MaskKind {
    /// Images: pixels with `(h + w)` even (all channels).
    Checkerboard,
    /// Images: the first half of the channels.
    Channel,
    /// Vectors: features with an even index.
    Alternate,
    /// Vectors: the first `floor(D/2)` features.
    Half,
}

impl MaskKind {
    /// The keyword, as written in a `.flow` file.
    pub fn as_str(self) -> &'static str {
        match self {
            MaskKind::Checkerboard => "checkerboard",
            MaskKind::Channel => "channel",
            MaskKind::Alternate => "alternate",
            MaskKind::Half => "half",
        }
    }
}

/// Which half of the values a coupling keeps (`b = 1`) and feeds to its net.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "kind", content = "parity", rename_all = "lowercase")]
pub enum Mask {
    Checkerboard(Parity),
    Channel(Parity),
    Alternate(Parity),
    Half(Parity),
}

impl Mask {
    pub fn new(kind: MaskKind, parity: Parity) -> Mask {
        match kind {
            MaskKind::Checkerboard => Mask::Checkerboard(parity),
            MaskKind::Channel => Mask::Channel(parity),
            MaskKind::Alternate => Mask::Alternate(parity),
            MaskKind::Half => Mask::Half(parity),
        }
    }

    pub fn kind(self) -> MaskKind {
        match self {
            Mask::Checkerboard(_) => MaskKind::Checkerboard,
            Mask::Channel(_) => MaskKind::Channel,
            Mask::Alternate(_) => MaskKind::Alternate,
            Mask::Half(_) => MaskKind::Half,
        }
    }

    pub fn parity(self) -> Parity {
        match self {
            Mask::Checkerboard(p) | Mask::Channel(p) | Mask::Alternate(p) | Mask::Half(p) => p,
        }
    }
}

impl std::fmt::Display for Mask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}({})", self.kind().as_str(), self.parity().as_str())
    }
}

/// How a coupling transforms the values its mask leaves free.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CouplingKind {
    /// `y = x * exp(s) + t`.
    Affine,
    /// `y = x + t`.
    Additive,
    /// A monotone rational-quadratic spline of `bins` bins on
    /// `[-bound, bound]`, identity outside (Neural Spline Flows).
    Spline { bins: u64, bound: f64 },
}

/// The range of `bins` in `coupling spline(...)`.
pub const SPLINE_BINS: std::ops::RangeInclusive<u64> = 2..=999;
/// `bins` when a spline coupling does not say.
pub const SPLINE_DEFAULT_BINS: u64 = 8;
/// `bound` when a spline coupling does not say.
pub const SPLINE_DEFAULT_BOUND: f64 = 3.0;
/// The largest `bound` of a spline coupling ("too large to represent" above).
pub const SPLINE_MAX_BOUND: f64 = 1e30;

impl CouplingKind {
    /// Net outputs per transformed value: `(s, t)`, `t`, or a spline's `n`
    /// widths, `n` heights and `n - 1` interior slopes.
    pub fn outputs_per_channel(self) -> u64 {
        match self {
            CouplingKind::Affine => 2,
            CouplingKind::Additive => 1,
            CouplingKind::Spline { bins, .. } => 3 * bins - 1,
        }
    }

    /// Whether the kind has a learned per-channel `scale`.
    pub fn has_scale(self) -> bool {
        match self {
            CouplingKind::Affine => true,
            CouplingKind::Additive | CouplingKind::Spline { .. } => false,
        }
    }

    /// Whether the fused coupling kernel (`exec::fused`) computes this kind.
    pub fn has_fused_kernel(self) -> bool {
        match self {
            CouplingKind::Affine | CouplingKind::Additive => true,
            CouplingKind::Spline { .. } => false,
        }
    }
}

impl std::fmt::Display for CouplingKind {
    /// As the layer column of `flowc check`: `affine`, `spline(bins 8, bound 3)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CouplingKind::Affine => write!(f, "affine"),
            CouplingKind::Additive => write!(f, "additive"),
            CouplingKind::Spline { bins, bound } => {
                write!(f, "spline(bins {bins}, bound {bound})")
            }
        }
    }
}

/// A conditioner net template; each coupling naming it gets fresh weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum NetKind {
    /// Weight-normalized pre-activation ResNet of 3x3 convolutions (images).
    Resnet { blocks: u64, features: u64 },
    /// Fully connected ReLU layers (vectors).
    Mlp { hidden: u64, layers: u64 },
}
