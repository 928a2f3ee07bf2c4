//! Sizes flowc can run. A flow past these limits passes every other check and
//! then aborts when the lowering or a run allocates it, so the check refuses
//! it instead, with `bad-argument` (LANGUAGE.md's code for a number too large
//! to represent). The limits are far above any published flow; counts are
//! u128 and saturate, so nothing here overflows either.

use std::collections::HashSet;

use serde::Serialize;

use super::{CheckedLayer, VerifyError};
use crate::span::{Located, Span};

use crate::resolve::{Layer, NetId, ResolvedFlow};

/// This stage's problems at their places (gathered by `crate::diag`).
type Diagnostic = Located<VerifyError>;

/// Parameters of a whole flow: 16 GB in f32, before Adam's two moments.
pub const MAX_PARAMETERS: u128 = 4_000_000_000;
/// Parameter tensors of a whole flow (the plan's table, the executor's
/// variables: a few hundred bytes each before any value).
pub const MAX_PARAM_TENSORS: u128 = 4_000_000;
/// Values of one tensor of one example (the input, a net's hidden features or
/// output): 4 GiB in f32, so a batch of a few still indexes and allocates.
pub const MAX_TENSOR_VALUES: u128 = 1 << 30;

/// What a limit counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Measure {
    Parameters,
    ParamTensors,
    Values,
}

impl Measure {
    /// The measures that add up over a flow (a tensor's values do not).
    const TOTALED: [Measure; 2] = [Measure::Parameters, Measure::ParamTensors];

    pub fn limit(self) -> u128 {
        match self {
            Measure::Parameters => MAX_PARAMETERS,
            Measure::ParamTensors => MAX_PARAM_TENSORS,
            Measure::Values => MAX_TENSOR_VALUES,
        }
    }
}

/// The message of [`VerifyError::TooLarge`]: the size found and the limit.
pub fn message(holder: &str, measure: Measure, found: u128) -> String {
    let sci = |n: u128| format!("{:.1e}", n as f64);
    let bytes = sci(found.saturating_mul(4));
    let limit = crate::report::thousands(measure.limit());
    match measure {
        Measure::Parameters => format!(
            "{holder} has {} parameters ({bytes} bytes in f32); flowc runs flows of up to {limit} parameters",
            sci(found)
        ),
        Measure::ParamTensors => format!(
            "{holder} has {} parameter tensors; flowc runs flows of up to {limit} parameter tensors",
            sci(found)
        ),
        Measure::Values => format!(
            "{holder} has {} values per example in one tensor ({bytes} bytes in f32); flowc runs flows of up to {limit} values in one tensor per example",
            sci(found)
        ),
    }
}

/// Parameter tensors of one layer, as `lower` lays them out.
pub fn param_tensors(layer: &CheckedLayer) -> u128 {
    layer.op.def().param_tensors()
}

/// Parameters, parameter tensors and largest per-example tensor of one layer.
fn sizes(layer: &CheckedLayer) -> [u128; 3] {
    let def = layer.op.def();
    [
        layer.parameters,
        def.param_tensors(),
        def.largest_tensor(layer.input),
    ]
}

/// Running totals over a flow's layers, and what has been reported, so that
/// each problem is reported once: a net at its declaration, a total at the
/// layer that crosses its limit.
pub struct Sizes {
    /// Parameters and parameter tensors so far.
    totals: [u128; 2],
    /// Where each total first passed its limit.
    crossed: [Option<(Span, Vec<Span>)>; 2],
    /// A single layer past the limit was reported: the total is past it too.
    own_reported: [bool; 2],
    /// The input was too large: every layer's tensors are as large, said once.
    input_too_large: bool,
    nets_reported: HashSet<NetId>,
}

impl Sizes {
    /// Starts on a flow; refuses an input too large for one tensor.
    pub fn new(flow: &ResolvedFlow, push: &mut impl FnMut(Diagnostic)) -> Sizes {
        let input = flow.input.filter(|s| s.size() > MAX_TENSOR_VALUES);
        if let Some(input) = input {
            let holder = format!("the input {input}");
            push(too_large(
                &holder,
                Measure::Values,
                input.size(),
                flow.input_span,
            ));
        }
        Sizes {
            totals: [0; 2],
            crossed: [None, None],
            own_reported: [false; 2],
            input_too_large: input.is_some(),
            nets_reported: HashSet::new(),
        }
    }

    /// Checks one verified layer on its own and adds it to the totals.
    pub fn layer(
        &mut self,
        flow: &ResolvedFlow,
        layer: &Layer,
        checked: &CheckedLayer,
        push: &mut impl FnMut(Diagnostic),
    ) {
        let [parameters, tensors, values] = sizes(checked);
        let own = [
            (Measure::Parameters, parameters),
            (Measure::ParamTensors, tensors),
            (Measure::Values, values),
        ];
        for (measure, found) in own {
            let skip = measure == Measure::Values && self.input_too_large;
            if found > measure.limit() && !skip {
                self.own_too_large(flow, layer, checked, measure, found, push);
            }
        }
        for (m, found) in [parameters, tensors].into_iter().enumerate() {
            self.totals[m] = self.totals[m].saturating_add(found);
            if self.totals[m] > Measure::TOTALED[m].limit() && self.crossed[m].is_none() {
                self.crossed[m] = Some((layer.span, layer.expanded_from.clone()));
            }
        }
    }

    /// The totals past their limits, at the layer that crossed, unless one
    /// layer past the limit on its own already said so.
    pub fn finish(self, push: &mut impl FnMut(Diagnostic)) {
        for (m, crossed) in self.crossed.into_iter().enumerate() {
            if let (Some((span, sites)), false) = (crossed, self.own_reported[m]) {
                let d = too_large("this flow", Measure::TOTALED[m], self.totals[m], span);
                push(d.expanded_from(&sites));
            }
        }
    }

    /// One layer past a limit on its own: a coupling at its net's declaration
    /// (once per net), any other layer where it stands.
    fn own_too_large(
        &mut self,
        flow: &ResolvedFlow,
        layer: &Layer,
        checked: &CheckedLayer,
        measure: Measure,
        found: u128,
        push: &mut impl FnMut(Diagnostic),
    ) {
        if let Some(m) = Measure::TOTALED.iter().position(|&x| x == measure) {
            self.own_reported[m] = true;
        }
        let input = checked.input;
        let keyword = checked.op.keyword();
        let d = match checked.op.def().net() {
            Some(id) => {
                let net = &flow.nets[id];
                if !self.nets_reported.insert(id) {
                    return;
                }
                let holder = format!("a {keyword} with net `{}` on input {input}", net.name);
                too_large(&holder, measure, found, net.span)
            }
            None => {
                let holder = format!("this {keyword} on input {input}");
                too_large(&holder, measure, found, layer.span).expanded_from(&layer.expanded_from)
            }
        };
        push(d);
    }
}

fn too_large(holder: &str, measure: Measure, found: u128, span: Span) -> Diagnostic {
    let e = VerifyError::TooLarge {
        holder: holder.to_string(),
        measure,
        found,
    };
    Diagnostic::error(e, span)
}
