//! The front end's part of `flowc check --numeric`: a flow whose input is
//! too large for a `D x D` Jacobian is checked on a downsized copy (same
//! layers, smaller `input`), the smallest one that still verifies cleanly;
//! the executor's [`crate::exec::numeric::measure`] then runs on its plan.

use crate::parse::{ast::ShapeDecl, parse, print::print};
use crate::plan::Plan;
use crate::shape::Shape;

/// Largest input (values per example) whose Jacobian is formed as is.
pub const MAX_JACOBIAN_DIMS: u128 = 256;

/// The flow's source with `input` replaced by `shape`.
pub fn with_input(source: &str, shape: Shape) -> Option<String> {
    let (program, _) = parse(source);
    let mut p = program?;
    let (decl, _) = p.input.as_mut()?;
    match (decl, shape) {
        (
            ShapeDecl::Image { c, h, w },
            Shape::Image {
                c: c2,
                h: h2,
                w: w2,
            },
        ) => {
            c.text = c2.to_string();
            h.text = h2.to_string();
            w.text = w2.to_string();
        }
        (ShapeDecl::Vector { d }, Shape::Vector { d: d2 }) => d.text = d2.to_string(),
        _ => return None,
    }
    Some(print(&p))
}

/// The shape to check on: the input itself when small, else the smallest
/// same-kind shape (channels kept, sizes halved) under which the flow still
/// verifies cleanly.
pub fn check_shape(source: &str, input: Shape) -> Shape {
    if input.size() <= MAX_JACOBIAN_DIMS {
        return input;
    }
    let candidates: Vec<Shape> = match input {
        Shape::Image { c, h, w } => (1..=8)
            .map(|k| Shape::Image {
                c,
                h: (1u64 << k).min(h),
                w: (1u64 << k).min(w),
            })
            .collect(),
        Shape::Vector { d } => [4u64, 8, 16, 32, 64, 128]
            .iter()
            .map(|&n| Shape::Vector { d: n.min(d) })
            .collect(),
    };
    for shape in candidates {
        if let Some(src) = with_input(source, shape) {
            if crate::check(&src).ok() && (shape.size() <= 4096 || shape == input) {
                return shape;
            }
        }
    }
    input
}

/// The plan `check --numeric` measures: the flow's own, or that of its
/// downsized copy.
pub fn numeric_plan(source: &str, input: Shape) -> Result<Plan, String> {
    let shape = check_shape(source, input);
    let src = with_input(source, shape).ok_or("cannot resize the input")?;
    crate::compile(&src).map_err(|_| "the flow does not compile".to_string())
}
