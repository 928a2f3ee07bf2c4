//! TEMPORARY materialized flag tracker; replaced by the symbolic one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    Image { c: u64, h: u64, w: u64 },
    Vector { d: u64 },
}
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parity {
    Even,
    Odd,
}
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlagOp {
    Checkerboard(Parity),
    Channel(Parity),
    Alternate(Parity),
    Half(Parity),
    Squeeze,
    Reverse,
    FactorOut,
    InvConv,
}
pub struct Flags {
    layout: Layout,
}
impl Flags {
    pub fn new(layout: Layout) -> Flags {
        Flags { layout }
    }
    pub fn apply(&mut self, _op: FlagOp) {}
    pub fn layout(&self) -> Layout {
        self.layout
    }
    pub fn untransformed(&self) -> u128 {
        0
    }
}
