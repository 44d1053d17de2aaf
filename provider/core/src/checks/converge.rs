//! One value per node must agree: the cross-node comparison the cluster
//! checks share (key_id hash, content digest, provider version, and each
//! deployment model's artifact).

use std::collections::BTreeMap;

use super::{Check, Def};

/// A pass naming the one value, or one failure per node not on the most
/// common value; without a single most common value every node fails and
/// the message lists the split. `shown` renders a value; no values is a
/// skip.
pub fn converged(
    out: &mut Vec<Check>,
    d: &Def,
    what: &str,
    values: &[(&str, String)],
    shown: impl Fn(&str) -> String,
    fix: &str,
) {
    if values.is_empty() {
        out.push(d.skip("no fresh report"));
        return;
    }
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, v) in values {
        *counts.entry(v.as_str()).or_default() += 1;
    }
    if counts.len() == 1 {
        out.push(d.pass(format!("{} nodes report {what} {}", values.len(), shown(&values[0].1))));
        return;
    }
    let top = counts.values().copied().max().unwrap_or(0);
    let leaders: Vec<&str> = counts.iter().filter(|(_, n)| **n == top).map(|(v, _)| *v).collect();
    if let [majority] = leaders.as_slice() {
        for (node, v) in values {
            if v != majority {
                out.push(
                    d.fail(
                        format!(
                            "{what} {} differs from {} on {top} of {} nodes",
                            shown(v),
                            shown(majority),
                            values.len()
                        ),
                        fix,
                    )
                    .on_node(node),
                );
            }
        }
        return;
    }
    let split = counts
        .iter()
        .map(|(v, n)| format!("{} on {n}", shown(v)))
        .collect::<Vec<_>>()
        .join(", ");
    for (node, v) in values {
        out.push(
            d.fail(
                format!("{what} {} here; no value has a majority ({split})", shown(v)),
                fix,
            )
            .on_node(node),
        );
    }
}
