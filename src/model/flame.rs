//! Flame-graph trees: an `Aggregate` of merged stacks becomes a call tree with self and
//! total samples and per-state totals on every node, pruned to a node budget.
//!
//! In: an `Aggregate`, the selected states, a node budget, and a function that turns a
//! node's RUNNABLE thread seconds into what the caller attaches to the node (the
//! server: its cost estimate from `cost`). Out: `FlameTree` (serializable as the API's
//! flame-graph nodes). Must not: do I/O or know prices (the cost formula lives in
//! src/cost, see docs/cost.md).

use super::aggregate::Aggregate;
use super::state::{StateCounts, ThreadState};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

/// Name of the node that stands for children pruned away.
pub const OTHER: &str = "[other]";

/// One node of the flame graph as sent to the viewer.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FlameNode<T> {
    /// Frame name (`all` for the root, `[other]` for pruned children).
    pub name: String,
    /// Samples (selected states) whose leaf is this frame.
    #[serde(rename = "self")]
    pub self_samples: u64,
    /// Samples (selected states) of this frame and its callees.
    pub total: u64,
    /// Non-zero per-state totals.
    pub states: BTreeMap<&'static str, u64>,
    /// What the caller made of this frame's RUNNABLE thread seconds (the server: cores,
    /// $ and CO2 per year), written as fields of the node.
    #[serde(flatten)]
    pub on_cpu: T,
    /// Callees, largest first.
    pub children: Vec<FlameNode<T>>,
}

/// A built tree and what pruning did.
#[derive(Debug, Clone, PartialEq)]
pub struct FlameTree<T> {
    /// The root (`all`).
    pub root: FlameNode<T>,
    /// Nodes in the tree, root and `[other]` nodes included.
    pub nodes: usize,
    /// Nodes of the full tree merged into `[other]` nodes.
    pub pruned_nodes: usize,
    /// Samples per state over the whole selection.
    pub by_state: StateCounts,
    /// RUNNABLE thread seconds over the whole selection.
    pub cpu_seconds: f64,
}

#[derive(Debug, Default, Clone)]
struct ArenaNode {
    frame: u32,
    parent: usize,
    self_samples: u64,
    states: StateCounts,
    cpu_nanos: u64,
    children: Vec<usize>,
}

impl ArenaNode {
    fn total(&self) -> u64 {
        self.states.iter().sum()
    }
}

/// Builds the call tree of `agg` restricted to `states` (all when empty), keeping at
/// most `max_nodes` nodes (at least the root); `on_cpu(seconds)` gives what each node
/// carries for its RUNNABLE thread seconds.
pub fn build<T>(agg: &Aggregate, states: &[ThreadState], max_nodes: usize, on_cpu: impl Fn(f64) -> T) -> FlameTree<T> {
    let mut arena = vec![ArenaNode { frame: u32::MAX, ..Default::default() }];
    let mut child_of: HashMap<(usize, u32), usize> = HashMap::new();
    let mut leaf_of_stack: HashMap<u32, usize> = HashMap::new();
    for sample in &agg.samples {
        if sample.samples == 0 || !(states.is_empty() || states.contains(&sample.state)) {
            continue;
        }
        let leaf = *leaf_of_stack.entry(sample.stack).or_insert_with(|| {
            let mut node = 0;
            for &frame in agg.stacks.get(sample.stack as usize).map(Vec::as_slice).unwrap_or(&[]) {
                node = *child_of.entry((node, frame)).or_insert_with(|| {
                    arena.push(ArenaNode { frame, parent: node, ..Default::default() });
                    let id = arena.len() - 1;
                    arena[node].children.push(id);
                    id
                });
            }
            node
        });
        let n = &mut arena[leaf];
        n.self_samples += sample.samples;
        n.states[sample.state.index()] += sample.samples;
        if sample.state.is_cpu() {
            n.cpu_nanos += sample.nanos;
        }
    }
    // Children are created after their parents, so one reverse pass sums subtrees.
    for id in (1..arena.len()).rev() {
        let (states, nanos, parent) = (arena[id].states, arena[id].cpu_nanos, arena[id].parent);
        for (acc, v) in arena[parent].states.iter_mut().zip(states) {
            *acc += v;
        }
        arena[parent].cpu_nanos += nanos;
    }

    let keep = choose_kept(&arena, max_nodes.max(1));
    let mut nodes = 0;
    let emitter = Emitter { arena: &arena, keep: &keep, frames: &agg.frames, on_cpu: &on_cpu };
    let root = emitter.emit(0, &mut nodes);
    let kept = keep.iter().filter(|k| **k).count();
    FlameTree {
        by_state: arena[0].states,
        cpu_seconds: arena[0].cpu_nanos as f64 / 1e9,
        root,
        nodes,
        pruned_nodes: arena.len() - kept,
    }
}

/// Marks the nodes to keep: the largest by total (a parent is never smaller than its
/// child and is created first, so the kept set is a connected tree), shrunk until the
/// kept nodes plus one `[other]` per parent with dropped children fit `max_nodes`.
fn choose_kept(arena: &[ArenaNode], max_nodes: usize) -> Vec<bool> {
    let mut keep = vec![true; arena.len()];
    if arena.len() <= max_nodes {
        return keep;
    }
    let mut order: Vec<usize> = (0..arena.len()).collect();
    order.sort_by(|a, b| arena[*b].total().cmp(&arena[*a].total()).then(a.cmp(b)));
    for &id in &order[max_nodes..] {
        keep[id] = false;
    }
    let mut kept = max_nodes;
    let mut dropped_children = vec![0usize; arena.len()];
    for &id in &order[max_nodes..] {
        let parent = arena[id].parent;
        if keep[parent] {
            dropped_children[parent] += 1;
        }
    }
    let mut others = dropped_children.iter().filter(|n| **n > 0).count();
    // Drop the smallest kept node (always a leaf of the kept tree) until it fits.
    let mut next = max_nodes;
    while kept + others > max_nodes && next > 1 {
        next -= 1;
        let id = order[next];
        keep[id] = false;
        kept -= 1;
        if dropped_children[id] > 0 {
            others -= 1;
        }
        let parent = arena[id].parent;
        dropped_children[parent] += 1;
        if dropped_children[parent] == 1 {
            others += 1;
        }
    }
    keep
}

fn states_map(states: &StateCounts) -> BTreeMap<&'static str, u64> {
    ThreadState::ALL.iter().filter(|s| states[s.index()] > 0).map(|s| (s.as_str(), states[s.index()])).collect()
}

/// What `emit` needs at every node.
struct Emitter<'a, F> {
    arena: &'a [ArenaNode],
    keep: &'a [bool],
    frames: &'a [String],
    on_cpu: &'a F,
}

impl<F> Emitter<'_, F> {
    fn node<T>(&self, name: String, self_samples: u64, states: &StateCounts, cpu_nanos: u64) -> FlameNode<T>
    where
        F: Fn(f64) -> T,
    {
        FlameNode {
            name,
            self_samples,
            total: states.iter().sum(),
            states: states_map(states),
            on_cpu: (self.on_cpu)(cpu_nanos as f64 / 1e9),
            children: Vec::new(),
        }
    }

    fn emit<T>(&self, id: usize, count: &mut usize) -> FlameNode<T>
    where
        F: Fn(f64) -> T,
    {
        let node = &self.arena[id];
        let name = if id == 0 {
            "all".to_string()
        } else {
            self.frames.get(node.frame as usize).cloned().unwrap_or_else(|| "[unknown]".to_string())
        };
        *count += 1;
        let mut out = self.node(name, node.self_samples, &node.states, node.cpu_nanos);
        let (mut other_states, mut other_nanos, mut any_other) = (StateCounts::default(), 0u64, false);
        for &child in &node.children {
            if self.keep[child] {
                out.children.push(self.emit(child, count));
            } else {
                any_other = true;
                for (acc, v) in other_states.iter_mut().zip(self.arena[child].states) {
                    *acc += v;
                }
                other_nanos += self.arena[child].cpu_nanos;
            }
        }
        if any_other {
            *count += 1;
            let total = other_states.iter().sum();
            out.children.push(self.node(OTHER.to_string(), total, &other_states, other_nanos));
        }
        out.children.sort_by(|a, b| b.total.cmp(&a.total).then_with(|| a.name.cmp(&b.name)));
        out
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::aggregate::AggregateSample;

    /// An aggregate of stacks given by frame names, 10 ms per sample, over 10 s on one host.
    pub(crate) fn agg(stacks: &[(&[&str], ThreadState, u64)]) -> Aggregate {
        let mut frames: Vec<String> = Vec::new();
        let mut out = Aggregate { profiles: 1, ..Default::default() };
        out.coverage.add(None, 0, 10_000);
        for (names, state, count) in stacks {
            let ids = names
                .iter()
                .map(|n| match frames.iter().position(|f| f == n) {
                    Some(i) => i as u32,
                    None => {
                        frames.push(n.to_string());
                        frames.len() as u32 - 1
                    }
                })
                .collect();
            out.stacks.push(ids);
            let stack = out.stacks.len() as u32 - 1;
            out.samples.push(AggregateSample { stack, state: *state, samples: *count, nanos: count * 10_000_000 });
        }
        out.frames = frames;
        out
    }

    pub(crate) fn find<'a, T>(node: &'a FlameNode<T>, path: &[&str]) -> &'a FlameNode<T> {
        path.iter().fold(node, |n, name| n.children.iter().find(|c| c.name == *name).expect(name))
    }

    #[test]
    fn pruning_respects_the_budget_and_keeps_totals() {
        use ThreadState::*;
        let mut stacks: Vec<(Vec<String>, u64)> = Vec::new();
        for i in 0..50u64 {
            stacks.push((vec!["main".into(), format!("f{i}"), format!("g{i}")], i + 1));
        }
        let refs: Vec<(Vec<&str>, ThreadState, u64)> =
            stacks.iter().map(|(s, c)| (s.iter().map(String::as_str).collect(), Runnable, *c)).collect();
        let owned: Vec<(&[&str], ThreadState, u64)> = refs.iter().map(|(s, st, c)| (s.as_slice(), *st, *c)).collect();
        let a = agg(&owned);
        for budget in [1, 2, 3, 10, 40, 101, 102] {
            let t = build(&a, &[], budget, |_| ());
            assert!(t.nodes <= budget.max(2), "budget {budget}: {} nodes", t.nodes);
            assert_eq!(t.root.total, (1..=50).sum::<u64>());
            let child_sum: u64 = t.root.children.iter().map(|c| c.total).sum();
            assert_eq!(child_sum, t.root.total, "budget {budget}");
            if budget >= 102 {
                assert_eq!(t.pruned_nodes, 0);
            }
        }
        let t = build(&a, &[], 10, |_| ());
        let main = find(&t.root, &["main"]);
        let largest_kept = main.children.iter().find(|c| c.name != OTHER).unwrap();
        assert_eq!(largest_kept.name, "f49");
        assert!(main.children.iter().any(|c| c.name == OTHER));
    }
}
