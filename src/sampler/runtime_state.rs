//! Thread states of a JVM's threads as a Java developer reads them (jstack, the JVM's own
//! `Thread.State`), from the names of an off-CPU stack: what the kernel shows (a futex
//! wait, with or without a timeout) cannot tell waiting to enter a `synchronized` block
//! from `Object.wait()`, but HotSpot's own frames and the Java frames can.
//!
//! In: the names of a sleeping thread's stack, root first. Out: the state these names
//! decide, or None (then the generic rules of `state.rs` decide: a timed futex wait is
//! TIMED_WAITING, an untimed one WAITING, which is right for `Unsafe.park`/`Object.wait`
//! with and without a timeout). Must not: read anything; pure, so each rule has a test.

use crate::model::ThreadState;

/// Frames (substrings), leaf-most first wins, and the state they mean.
const JVM_FRAMES: &[(&str, Option<ThreadState>)] = &[
    // Waiting to enter a `synchronized` block, or to re-enter it after `wait()` returns.
    ("ObjectMonitor::enter(", Some(ThreadState::Blocked)),
    ("ObjectMonitor::EnterI(", Some(ThreadState::Blocked)),
    ("ObjectMonitor::ReenterI(", Some(ThreadState::Blocked)),
    // Thread.sleep parks on a timed event: TIMED_WAITING even if the futex wait had none.
    ("JVM_Sleep", Some(ThreadState::TimedWaiting)),
    ("JavaThread::sleep(", Some(ThreadState::TimedWaiting)),
    ("java.lang.Thread.sleep", Some(ThreadState::TimedWaiting)),
    // A Condition's await parks too, and is WAITING / TIMED_WAITING by its timeout: the
    // generic rules decide; an AQS acquire below it is the re-acquisition after a signal.
    ("AbstractQueuedSynchronizer$ConditionObject.await", None),
    // Contention on a ReentrantLock / ReentrantReadWriteLock / Semaphore: the JVM says
    // WAITING (parked), a Java developer reads lock contention: BLOCKED, as `synchronized`.
    ("AbstractQueuedSynchronizer.acquire", Some(ThreadState::Blocked)),
];

/// The state a sleeping JVM thread's stack (names root first) decides, if any.
pub fn jvm_state<S: AsRef<str>>(names_root_first: &[S]) -> Option<ThreadState> {
    names_root_first.iter().rev().find_map(|name| {
        let name = name.as_ref();
        JVM_FRAMES.iter().find(|(frame, _)| name.contains(frame)).map(|(_, state)| *state)
    })?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entering_a_monitor_is_blocked_whatever_the_futex_says() {
        let stack = [
            "start_thread",
            "thread_native_entry(Thread*)",
            "Interpreter",
            "ObjectSynchronizer::enter(Handle, BasicLock*, JavaThread*)",
            "ObjectMonitor::enter(JavaThread*)",
            "ObjectMonitor::EnterI(JavaThread*)",
            "os::PlatformEvent::park(long)",
            "__pthread_cond_timedwait",
        ];
        assert_eq!(jvm_state(&stack), Some(ThreadState::Blocked));
    }

    #[test]
    fn sleep_is_timed_waiting_and_plain_parks_are_left_to_the_futex() {
        let sleep = [
            "start_thread",
            "java.lang.Thread.sleep",
            "JVM_Sleep",
            "JavaThread::sleep(long)",
            "pthread_cond_timedwait",
        ];
        assert_eq!(jvm_state(&sleep), Some(ThreadState::TimedWaiting));
        let wait = ["start_thread", "Interpreter", "JVM_MonitorWait", "ObjectMonitor::wait(long, bool, JavaThread*)"];
        assert_eq!(jvm_state(&wait), None);
        let park = ["start_thread", "Interpreter", "Unsafe_Park", "Parker::park(bool, long)", "__pthread_cond_wait"];
        assert_eq!(jvm_state(&park), None);
    }

    #[test]
    fn lock_contention_is_blocked_but_a_condition_wait_is_not() {
        let lock = [
            "java.util.concurrent.locks.ReentrantLock$Sync.lock",
            "java.util.concurrent.locks.AbstractQueuedSynchronizer.acquire",
            "jdk.internal.misc.Unsafe.park",
            "Unsafe_Park",
        ];
        assert_eq!(jvm_state(&lock), Some(ThreadState::Blocked));
        let await_ = [
            "java.util.concurrent.LinkedBlockingQueue.take",
            "java.util.concurrent.locks.AbstractQueuedSynchronizer$ConditionObject.await",
            "jdk.internal.misc.Unsafe.park",
        ];
        assert_eq!(jvm_state(&await_), None);
        let reacquire = [
            "java.util.concurrent.locks.AbstractQueuedSynchronizer$ConditionObject.await",
            "java.util.concurrent.locks.AbstractQueuedSynchronizer.acquire",
            "jdk.internal.misc.Unsafe.park",
        ];
        assert_eq!(jvm_state(&reacquire), Some(ThreadState::Blocked));
    }
}
