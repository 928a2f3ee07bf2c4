//! The intermediate representation's shared types: what every stage from
//! resolve to the executor means by a layer's parts, defined once here and
//! imported, never redefined. (The start of #8's seam: coupling kinds so far.)

use serde::Serialize;

/// How a coupling transforms the values its mask leaves free.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CouplingKind {
    /// `y = x * exp(s) + t`.
    Affine,
    /// `y = x + t`.
    Additive,
}

impl CouplingKind {
    /// Net outputs per transformed value: `(s, t)` or `t`.
    pub fn outputs_per_channel(self) -> u64 {
        match self {
            CouplingKind::Affine => 2,
            CouplingKind::Additive => 1,
        }
    }
}
