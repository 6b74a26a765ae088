//! Shared vocabulary of hotframe, with no I/O: thread states, frames and stacks,
//! samples, `Profile` (a batch of samples with labels and a time window), `Aggregate`
//! (profiles merged by a query, with the wall time they cover per host: `Coverage`) and
//! the flame-graph tree built from it.
//!
//! In: nothing of the crate. Out: the types every other module speaks, plus the
//! folded-text and pprof codecs. Must not: touch files, sockets, clocks (except
//! `time::now_ms`) or any other module of the crate.

pub mod aggregate;
pub mod coverage;
pub mod flame;
pub mod folded;
pub mod perf_script;
pub mod pprof;
pub mod profile;
pub mod reason;
pub mod speedscope;
pub mod state;
pub mod time;
pub mod wire;

pub use aggregate::{Aggregate, AggregateSample};
pub use coverage::{Coverage, HostCoverage};
pub use profile::{Limits, ModelError, Profile, ProfileBuilder, Sample};
pub use reason::Reason;
pub use state::{StateCounts, ThreadState};
