//! Thread-state classification of a thread that is not running (docs/thread-states.md).
//!
//! In: the scheduler state letter, the syscall it is blocked in (with arguments) and,
//! later, the names of its user stack. Out: an `Observed` state at sampling time (no
//! symbolization needed, so the sampling loop never waits for debug info), resolved to
//! a `ThreadState` once the stack has names. Must not: read /proc or memory; these are
//! pure functions so every rule has a unit test.

use super::procfs::Syscall;
use crate::model::ThreadState;

// x86_64 syscall numbers.
const SYS_POLL: i64 = 7;
const SYS_SELECT: i64 = 23;
const SYS_NANOSLEEP: i64 = 35;
const SYS_FUTEX: i64 = 202;
const SYS_EPOLL_WAIT: i64 = 232;
const SYS_CLOCK_NANOSLEEP: i64 = 230;
const SYS_PSELECT6: i64 = 270;
const SYS_PPOLL: i64 = 271;
const SYS_EPOLL_PWAIT: i64 = 281;
const SYS_EPOLL_PWAIT2: i64 = 441;
const SYS_FUTEX_WAITV: i64 = 449;

/// The futex command without FUTEX_PRIVATE_FLAG (128) and FUTEX_CLOCK_REALTIME (256).
const FUTEX_CMD_MASK: u64 = 0x7f;
const FUTEX_LOCK_PI: u64 = 6;
const FUTEX_TRYLOCK_PI: u64 = 8;
const FUTEX_LOCK_PI2: u64 = 13;

/// Frames (substrings of demangled names) that mean "waiting for a lock another thread
/// holds". A condition variable reacquiring its mutex after a wake-up shows
/// `__pthread_mutex_cond_lock` and is contention too.
const LOCK_FRAMES: &[&str] = &[
    "__lll_lock_wait",
    "__lll_lock_wait_private",
    "pthread_mutex_lock",
    "pthread_mutex_timedlock",
    "pthread_mutex_clocklock",
    "__pthread_mutex_cond_lock",
    "pthread_rwlock_rdlock",
    "pthread_rwlock_wrlock",
    "pthread_rwlock_timedrdlock",
    "pthread_rwlock_timedwrlock",
    "pthread_rwlock_clockrdlock",
    "pthread_rwlock_clockwrlock",
    "pthread_spin_lock",
    "::lock_contended",
    "::read_contended",
    "::write_contended",
    "parking_lot::raw_mutex::RawMutex::lock_slow",
    "parking_lot::raw_rwlock::RawRwLock::lock_shared_slow",
    "parking_lot::raw_rwlock::RawRwLock::lock_exclusive_slow",
    "std::mutex::lock",
    "std::__mutex_base::lock",
    "std::shared_mutex::lock",
];

/// True if the stack (any order) shows a lock acquisition.
pub fn is_lock_wait<S: AsRef<str>>(stack_names: &[S]) -> bool {
    stack_names.iter().any(|n| {
        let n = n.as_ref();
        LOCK_FRAMES.iter().any(|f| n.contains(f))
    })
}

/// True if the syscall sleeps with a timeout (or is a lock wait the kernel knows of).
fn syscall_is_timed(nr: i64, args: &[u64; 6]) -> Option<bool> {
    let timed = match nr {
        SYS_NANOSLEEP | SYS_CLOCK_NANOSLEEP => true,
        // futex(uaddr, op, val, timeout, ...): a null timeout waits forever.
        SYS_FUTEX => args[3] != 0,
        // futex_waitv(waiters, n, flags, timeout, clockid)
        SYS_FUTEX_WAITV => args[3] != 0,
        // epoll_wait(epfd, events, maxevents, int timeout): -1 waits forever.
        SYS_EPOLL_WAIT | SYS_EPOLL_PWAIT => (args[3] as i32) >= 0,
        // epoll_pwait2(epfd, events, maxevents, const struct timespec *timeout, ...)
        SYS_EPOLL_PWAIT2 => args[3] != 0,
        // poll(fds, nfds, int timeout)
        SYS_POLL => (args[2] as i32) >= 0,
        // ppoll(fds, nfds, const struct timespec *tsp, ...)
        SYS_PPOLL => args[2] != 0,
        // select(n, r, w, e, struct timeval *timeout)
        SYS_SELECT | SYS_PSELECT6 => args[4] != 0,
        _ => return None,
    };
    Some(timed)
}

/// True if the syscall is the kernel-side lock of a PI mutex.
fn syscall_is_pi_lock(nr: i64, args: &[u64; 6]) -> bool {
    nr == SYS_FUTEX && matches!(args[1] & FUTEX_CMD_MASK, FUTEX_LOCK_PI | FUTEX_LOCK_PI2 | FUTEX_TRYLOCK_PI)
}

/// A state as seen at sampling time: final, or to become BLOCKED if the stack turns
/// out to be a lock acquisition (decided when the stack is symbolized).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Observed {
    /// The state unless the stack shows a lock.
    pub state: ThreadState,
    /// Whether a lock frame on the stack makes it BLOCKED.
    pub lock_check: bool,
}

impl Observed {
    /// A state no stack can change (on-CPU samples, IO, PI-futex lock).
    pub fn fixed(state: ThreadState) -> Observed {
        Observed { state, lock_check: false }
    }

    /// The final state, given the names of the stack (root first): a JVM's own frames
    /// first (`runtime_state`), then lock frames.
    pub fn resolve<S: AsRef<str>>(self, stack_names: &[S]) -> ThreadState {
        if let Some(jvm) = self.lock_check.then(|| super::runtime_state::jvm_state(stack_names)).flatten() {
            jvm
        } else if self.lock_check && is_lock_wait(stack_names) {
            ThreadState::Blocked
        } else {
            self.state
        }
    }
}

/// What /proc says of a thread that is not on a CPU. `state` is the /proc stat letter.
/// Returns `None` for threads that are runnable (`R`: counted by on-CPU sampling and
/// run-queue delay) or gone (`Z`, `X`).
pub fn observe(state: char, syscall: &Syscall) -> Option<Observed> {
    match state {
        'R' | 'Z' | 'X' | 'x' => return None,
        'D' => return Some(Observed::fixed(ThreadState::Io)),
        _ => {}
    }
    // S (interruptible sleep), I (idle), T/t (stopped), P (parked), W: a sleep of some kind.
    if let Syscall::In { nr, args, .. } = syscall {
        if syscall_is_pi_lock(*nr, args) {
            return Some(Observed::fixed(ThreadState::Blocked));
        }
        let state = match syscall_is_timed(*nr, args) {
            Some(true) => ThreadState::TimedWaiting,
            _ => ThreadState::Waiting,
        };
        return Some(Observed { state, lock_check: true });
    }
    Some(Observed { state: ThreadState::Waiting, lock_check: true })
}

/// `observe` and `Observed::resolve` in one step. `stack_names` in any order.
pub fn classify<S: AsRef<str>>(state: char, syscall: &Syscall, stack_names: &[S]) -> Option<ThreadState> {
    observe(state, syscall).map(|o| o.resolve(stack_names))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sys(nr: i64, args: [u64; 6]) -> Syscall {
        Syscall::In { nr, args, sp: 0, pc: 0 }
    }
    const NONE: [&str; 0] = [];

    #[test]
    fn running_and_dead_threads_are_not_classified() {
        assert_eq!(classify('R', &Syscall::Running, &NONE), None);
        assert_eq!(classify('Z', &Syscall::Running, &NONE), None);
    }

    #[test]
    fn disk_wait_is_io() {
        assert_eq!(classify('D', &sys(75, [0; 6]), &NONE), Some(ThreadState::Io));
    }

    #[test]
    fn sleeps_and_timeouts_are_timed_waiting() {
        assert_eq!(classify('S', &sys(SYS_CLOCK_NANOSLEEP, [0; 6]), &NONE), Some(ThreadState::TimedWaiting));
        assert_eq!(classify('S', &sys(SYS_FUTEX, [1, 0x89, 0, 0x7ff0, 0, 0]), &NONE), Some(ThreadState::TimedWaiting));
        assert_eq!(classify('S', &sys(SYS_EPOLL_WAIT, [3, 1, 8, 100, 0, 0]), &NONE), Some(ThreadState::TimedWaiting));
        assert_eq!(classify('S', &sys(SYS_POLL, [1, 1, 0, 0, 0, 0]), &NONE), Some(ThreadState::TimedWaiting));
    }

    #[test]
    fn untimed_waits_are_waiting() {
        let cond = ["start_thread", "waiter", "___pthread_cond_wait", "__futex_abstimed_wait_common"];
        assert_eq!(classify('S', &sys(SYS_FUTEX, [1, 0x189, 0, 0, 0, 0xffffffff]), &cond), Some(ThreadState::Waiting));
        assert_eq!(
            classify('S', &sys(SYS_EPOLL_WAIT, [3, 1, 8, u32::MAX as u64, 0, 0]), &NONE),
            Some(ThreadState::Waiting)
        );
        assert_eq!(classify('S', &sys(0, [0; 6]), &NONE), Some(ThreadState::Waiting));
    }

    #[test]
    fn lock_waits_are_blocked_from_the_stack() {
        let c = ["start_thread", "contender", "___pthread_mutex_lock", "__lll_lock_wait"];
        assert_eq!(classify('S', &sys(SYS_FUTEX, [1, 0x80, 2, 0, 0, 0]), &c), Some(ThreadState::Blocked));
        let rust = ["main", "std::sys::sync::mutex::futex::Mutex::lock_contended", "syscall"];
        assert_eq!(classify('S', &sys(SYS_FUTEX, [1, 0x89, 2, 0, 0, 0]), &rust), Some(ThreadState::Blocked));
        // A PI mutex is a lock whatever the stack says.
        assert_eq!(classify('S', &sys(SYS_FUTEX, [1, 0x86, 0, 0, 0, 0]), &NONE), Some(ThreadState::Blocked));
    }
}
