//! Priced flame graphs: the model's call tree of an `Aggregate` with each node's
//! RUNNABLE time priced by the cost model (only on-CPU time costs CPU).
//!
//! In: `model::Aggregate`, the selected states, a node budget, a `cost::CostContext`.
//! Out: `FlameTree` (serializable: the API's flame-graph nodes). Must not: touch the
//! store or the clock, or price anything itself (the formula lives in src/cost).

use crate::cost::{CostContext, Estimate};
use crate::model::{flame, Aggregate, ThreadState};

/// One node of the flame graph as sent to the viewer, with cores, $ and CO2 per year.
pub type FlameNode = flame::FlameNode<Estimate>;
/// A priced tree and what pruning did.
pub type FlameTree = flame::FlameTree<Estimate>;

/// Builds the call tree of `agg` restricted to `states` (all when empty), keeping at
/// most `max_nodes` nodes (at least the root) and pricing each with `cost`.
pub fn build(agg: &Aggregate, states: &[ThreadState], max_nodes: usize, cost: &CostContext) -> FlameTree {
    flame::build(agg, states, max_nodes, |cpu_seconds| cost.estimate(cpu_seconds))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cost::CostSettings;
    use crate::model::flame::tests::{agg, find};

    fn ctx() -> CostContext {
        let inputs = CostSettings { price_per_core_hour: Some(0.1), ..Default::default() }.resolve().unwrap();
        CostContext::new(inputs, 10.0, 1)
    }

    #[test]
    fn totals_self_and_states() {
        use ThreadState::*;
        let a = agg(&[
            (&["main", "work", "hot"], Runnable, 60),
            (&["main", "work"], Runnable, 10),
            (&["main", "work", "hot"], Blocked, 5),
            (&["main", "idle"], Waiting, 100),
        ]);
        let t = build(&a, &[Runnable, Blocked], 100, &ctx());
        assert_eq!(t.root.total, 75);
        assert_eq!(t.nodes, 4);
        let work = find(&t.root, &["main", "work"]);
        assert_eq!((work.self_samples, work.total), (10, 75));
        assert_eq!(work.states.get("BLOCKED"), Some(&5));
        let hot = find(&t.root, &["main", "work", "hot"]);
        // 60 RUNNABLE samples at 100 Hz = 0.6 s over 10 s = 0.06 cores; BLOCKED costs nothing.
        assert!((hot.on_cpu.cores - 0.06).abs() < 1e-12);
        assert!((hot.on_cpu.usd_per_year - 0.06 * 8760.0 * 0.1).abs() < 1e-9);
        assert_eq!(t.by_state, [70, 0, 0, 5, 0]);
    }

    #[test]
    fn nodes_serialize_with_their_cost_fields() {
        let a = agg(&[(&["main"], ThreadState::Runnable, 100)]);
        let t = build(&a, &[], 100, &ctx());
        let json = serde_json::to_value(&t.root).unwrap();
        let keys: Vec<&str> = json.as_object().unwrap().keys().map(String::as_str).collect();
        for key in ["name", "self", "total", "states", "cores", "usdPerYear", "kgCo2PerYear", "children"] {
            assert!(keys.contains(&key), "{key} missing from {json}");
        }
        assert!((json["cores"].as_f64().unwrap() - 0.1).abs() < 1e-12);
    }
}
