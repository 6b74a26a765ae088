//! What the sampler is asked to do: `SamplerOptions` with their defaults, and the range
//! check `Sampler::new` runs first.
//!
//! In: values from the CLI or an embedding program. Out: the options, or a `BadOption`
//! error that names the allowed range. Must not: open events or read /proc.

use super::SamplerError;
use serde::{Deserialize, Serialize};

/// How user stacks of on-CPU samples are walked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnwindMode {
    /// Copy the user stack and unwind it with DWARF CFI (`.eh_frame`): complete stacks
    /// for binaries built without frame pointers. Default.
    Dwarf,
    /// The kernel's frame-pointer callchain: cheaper, complete only for code built with
    /// frame pointers.
    FramePointer,
}

/// What and how to sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SamplerOptions {
    /// Samples per second per thread (on-CPU and wall-clock ticks). Default 99.
    pub frequency_hz: u32,
    /// Unwinding of on-CPU samples. Default `Dwarf`.
    pub unwind: UnwindMode,
    /// Put kernel frames (suffixed `_[k]`) in front of on-CPU user stacks. Default false.
    pub kernel: bool,
    /// Also sample threads that are off-CPU, with their state. Default true.
    pub wall_clock: bool,
    /// Bytes of user stack copied per sample for DWARF unwinding. Default 32 KiB.
    pub stack_bytes: u32,
    /// Also count time spent runnable but waiting for a CPU (schedstat run delay) as
    /// RUNNABLE, spread over the thread's recent on-CPU stacks. A wall-clock view, but
    /// RUNNABLE then no longer equals CPU time, which inflates cost estimates on a
    /// saturated host. Default false.
    pub runqueue: bool,
}

impl Default for SamplerOptions {
    fn default() -> Self {
        SamplerOptions {
            frequency_hz: 99,
            unwind: UnwindMode::Dwarf,
            kernel: false,
            wall_clock: true,
            stack_bytes: 32 * 1024,
            runqueue: false,
        }
    }
}

impl SamplerOptions {
    /// Refuses values out of range, naming the range and the default.
    pub(super) fn check(&self) -> Result<(), SamplerError> {
        if self.frequency_hz == 0 || self.frequency_hz > 10_000 {
            return Err(SamplerError::BadOption(format!(
                "frequency {} Hz is out of range: use 1 to 10000 (99 is a good default)",
                self.frequency_hz
            )));
        }
        if self.unwind == UnwindMode::Dwarf && !(512..=65_528).contains(&self.stack_bytes) {
            return Err(SamplerError::BadOption(format!(
                "stack copy of {} bytes is out of range: use 512 to 65528 (32768 is the default)",
                self.stack_bytes
            )));
        }
        Ok(())
    }

    /// The sampling period, one over the frequency.
    pub(super) fn period_ns(&self) -> u64 {
        1_000_000_000 / self.frequency_hz as u64
    }
}

#[cfg(test)]
mod tests {
    use super::super::Sampler;
    use super::*;

    #[test]
    fn options_out_of_range_are_refused_with_the_range() {
        let err = Sampler::new(SamplerOptions { frequency_hz: 0, ..SamplerOptions::default() }).err();
        assert!(matches!(&err, Some(SamplerError::BadOption(m)) if m.contains("1 to 10000")), "{err:?}");
        let err = Sampler::new(SamplerOptions { stack_bytes: 100, ..SamplerOptions::default() }).err();
        assert!(matches!(&err, Some(SamplerError::BadOption(m)) if m.contains("512 to 65528")), "{err:?}");
    }
}
