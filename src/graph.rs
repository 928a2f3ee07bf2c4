//! Stage 3, graph: the resolved layers as a petgraph graph with the tensor
//! shape of every edge, including the factor-out edges to the latents.
//!
//! Shapes are inferred here, like types in a type checker: a layer that does
//! not fit its input gets no output shape (`None`), and everything after it is
//! unknown. Each kind's shape rule is its definition's
//! [`LayerDef::shape`](crate::layers::LayerDef::shape); the verifier re-runs
//! it to say why a layer does not fit.

use petgraph::graph::{DiGraph, NodeIndex};
use thiserror::Error;

use crate::resolve::ResolvedFlow;
use crate::shape::Shape;
use crate::span::Code;

/// A node of the flow graph.
#[derive(Clone, Debug, PartialEq)]
pub enum Node {
    /// The data `x`.
    Input,
    /// Layer `i` of [`ResolvedFlow::layers`].
    Layer(usize),
    /// Latent `k`, in the order of LANGUAGE.md: factored-out parts, then the rest.
    Latent(usize),
}

/// An edge carries one tensor; `None` once a layer before it did not fit.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Edge {
    pub shape: Option<Shape>,
}

/// The flow as a graph: a chain of layers from the input, with a branch to a
/// latent at every `factor_out` and at the end.
#[derive(Clone, Debug)]
pub struct FlowGraph {
    pub resolved: ResolvedFlow,
    pub graph: DiGraph<Node, Edge>,
    pub input: NodeIndex,
    /// One node per resolved layer, in order.
    pub layers: Vec<NodeIndex>,
    pub latents: Vec<NodeIndex>,
}

/// A layer that does not fit the shape of its input (the shape rules'
/// errors, in `crate::layers`).
#[derive(Clone, Debug, Error, PartialEq)]
pub enum ShapeError {
    #[error("squeeze needs even height and width; its input here is {input}")]
    SqueezeOdd { input: Shape },
    #[error("squeeze needs an image; its input here is a vector of {input} features")]
    SqueezeVector { input: Shape },
    #[error("invconv needs an image; its input here is a vector of {input} features")]
    InvConvVector { input: Shape },
    #[error("factor_out needs at least 2 {unit}, so that some leave and some stay; its input here is {input}")]
    FactorOutSingle { input: Shape, unit: &'static str },
}

impl ShapeError {
    pub fn code(&self) -> Code {
        match self {
            ShapeError::FactorOutSingle { .. } => Code::FactorOut,
            ShapeError::SqueezeOdd { .. }
            | ShapeError::SqueezeVector { .. }
            | ShapeError::InvConvVector { .. } => Code::Shape,
        }
    }
}

/// Builds the graph of a resolved flow, inferring every edge's shape.
pub fn build(resolved: ResolvedFlow) -> FlowGraph {
    let mut graph = DiGraph::new();
    let input = graph.add_node(Node::Input);
    let mut layers = Vec::with_capacity(resolved.layers.len());
    let mut latents = vec![];
    let mut prev = input;
    let mut shape = resolved.input;
    for (i, layer) in resolved.layers.iter().enumerate() {
        let node = graph.add_node(Node::Layer(i));
        graph.add_edge(prev, node, Edge { shape });
        let inferred = shape.and_then(|s| layer.op.def().shape(s).ok());
        shape = inferred.map(|(out, _)| out);
        if layer.op.def().emits_latent().is_some() {
            let latent = graph.add_node(Node::Latent(latents.len()));
            graph.add_edge(
                node,
                latent,
                Edge {
                    shape: inferred.and_then(|(_, l)| l),
                },
            );
            latents.push(latent);
        }
        layers.push(node);
        prev = node;
    }
    let last = graph.add_node(Node::Latent(latents.len()));
    graph.add_edge(prev, last, Edge { shape });
    latents.push(last);
    FlowGraph {
        resolved,
        graph,
        input,
        layers,
        latents,
    }
}

impl FlowGraph {
    /// The edge into a node of the main chain.
    fn edge_into(&self, node: NodeIndex) -> Option<Shape> {
        let e = self
            .graph
            .edges_directed(node, petgraph::Direction::Incoming)
            .next()?;
        e.weight().shape
    }

    /// The shape flowing into layer `i`.
    pub fn input_shape(&self, i: usize) -> Option<Shape> {
        self.edge_into(self.layers[i])
    }

    /// The shape layer `i` passes on.
    pub fn output_shape(&self, i: usize) -> Option<Shape> {
        let next = self
            .layers
            .get(i + 1)
            .copied()
            .unwrap_or(*self.latents.last().unwrap());
        self.edge_into(next)
    }

    /// The latents' shapes, in order.
    pub fn latent_shapes(&self) -> Vec<Option<Shape>> {
        self.latents.iter().map(|n| self.edge_into(*n)).collect()
    }

    /// The latent index layer `i` emits, if it is a `factor_out`.
    pub fn latent_of(&self, i: usize) -> Option<usize> {
        self.resolved.layers[i].op.def().emits_latent()?;
        // The last layer also feeds the final latent: the factored one comes first.
        let latents = self
            .graph
            .neighbors(self.layers[i])
            .filter_map(|n| match self.graph[n] {
                Node::Latent(k) => Some(k),
                _ => None,
            });
        latents.min()
    }

    /// Graphviz text of the flow, one node per layer and latent.
    pub fn to_dot(&self) -> String {
        let mut out = format!(
            "digraph {} {{\n  rankdir=TB;\n  node [shape=box, fontname=\"monospace\"];\n",
            self.resolved.name
        );
        for idx in self.graph.node_indices() {
            let label = match self.graph[idx] {
                Node::Input => match self.resolved.input {
                    Some(s) => format!("x: {s}"),
                    None => "x".into(),
                },
                Node::Layer(i) => describe(&self.resolved, i),
                Node::Latent(k) => format!("z{k}"),
            };
            let style = match self.graph[idx] {
                Node::Input | Node::Latent(_) => ", shape=ellipse",
                Node::Layer(_) => "",
            };
            out.push_str(&format!(
                "  n{} [label=\"{}\"{}];\n",
                idx.index(),
                label.replace('"', "'"),
                style
            ));
        }
        for e in self.graph.edge_indices() {
            let (a, b) = self.graph.edge_endpoints(e).unwrap();
            let label = self.graph[e].shape.map_or("?".into(), |s| s.to_string());
            out.push_str(&format!(
                "  n{} -> n{} [label=\"{}\"];\n",
                a.index(),
                b.index(),
                label
            ));
        }
        out.push_str("}\n");
        out
    }
}

/// A one-line description of layer `i`: `coupling affine checkerboard(even) res64`.
pub fn describe(resolved: &ResolvedFlow, i: usize) -> String {
    resolved.layers[i].op.def().describe(&resolved.nets)
}
