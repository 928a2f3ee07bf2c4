//! Prints a syntax tree back as `.flow` text, in the project's layout (four
//! spaces per level, declarations first). Parsing the output gives back the
//! same program; the property tests hold it to that.

use super::ast::*;

pub fn print(p: &Program) -> String {
    let mut out = format!("flow {} {{\n", p.name.name);
    if let Some((shape, _)) = &p.input {
        let shape = match shape {
            ShapeDecl::Image { c, h, w } => format!("image({}, {}, {})", c.text, h.text, w.text),
            ShapeDecl::Vector { d } => format!("vector({})", d.text),
        };
        let condition = p.condition.as_ref().map_or(String::new(), condition);
        out.push_str(&format!("    input {shape}{condition}\n"));
    }
    if let Some(prior) = &p.prior {
        out.push_str(&format!("    {}\n", crate::fmt::prior_text(prior)));
    }
    for net in &p.nets {
        out.push_str(&format!(
            "    net {} = {}({})\n",
            net.name.name,
            net.kind.name,
            args(&net.args)
        ));
    }
    for block in &p.blocks {
        let params: Vec<&str> = block.params.iter().map(|i| i.name.as_str()).collect();
        out.push_str(&format!(
            "    block {}({}) {{\n",
            block.name.name,
            params.join(", ")
        ));
        layers(&block.body, 2, &mut out);
        out.push_str("    }\n");
    }
    layers(&p.layers, 1, &mut out);
    out.push_str("}\n");
    out
}

/// `key = value, ...`, as the formatter writes arguments too.
pub fn args(args: &[Arg]) -> String {
    let shown: Vec<String> = args
        .iter()
        .map(|a| format!("{} = {}", a.key.name, value(&a.value)))
        .collect();
    shown.join(", ")
}

/// A value as written: a number, a name, or `name(word, ...)`.
pub fn value(v: &Value) -> String {
    match v {
        Value::Number(n) => n.text.clone(),
        Value::Name(i) => i.name.clone(),
        Value::Call { name, args, .. } => {
            let words: Vec<&str> = args.iter().map(|i| i.name.as_str()).collect();
            format!("{}({})", name.name, words.join(", "))
        }
    }
}

fn layers(ls: &[Layer], depth: usize, out: &mut String) {
    let indent = "    ".repeat(depth);
    for l in ls {
        let line = match &l.kind {
            LayerKind::Coupling { kind, args: a } => format!("coupling {}({})", kind.name, args(a)),
            LayerKind::Squeeze => "squeeze".into(),
            LayerKind::FactorOut { args: a } => format!("factor_out({})", args(a)),
            LayerKind::Logit { args: a } => format!("logit({})", args(a)),
            LayerKind::BatchNorm => "batchnorm".into(),
            LayerKind::ActNorm => "actnorm".into(),
            LayerKind::InvConv => "invconv".into(),
            LayerKind::Reverse => "reverse".into(),
            LayerKind::Repeat { count, body } => {
                out.push_str(&format!("{indent}repeat {} {{\n", count.text));
                layers(body, depth + 1, out);
                out.push_str(&format!("{indent}}}\n"));
                continue;
            }
            LayerKind::BlockCall { name, args } => {
                let a: Vec<&str> = args.iter().map(|i| i.name.as_str()).collect();
                format!("{}({})", name.name, a.join(", "))
            }
        };
        out.push_str(&format!("{indent}{line}\n"));
    }
}

/// ` given class(K)`.
pub fn condition(c: &ConditionDecl) -> String {
    format!(" given class({})", c.classes.text)
}
