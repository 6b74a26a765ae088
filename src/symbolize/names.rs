//! Frame names as users know them: a symbol table's name for a function, cleaned of what
//! only the toolchain needs. glibc's hidden internal aliases (`__GI___libc_write`) become
//! the public name they stand for (`write`), and symbol versions (`sem_post@@GLIBC_2.34`,
//! `sem_post@GLIBC_2.2.5`) are cut off.
//!
//! In: one symbol name. Out: the name to show. Must not: do I/O, or rename anything whose
//! public name it is not sure of (a `__libc_` function renames only when glibc exports a
//! public alias of it, such as `__libc_malloc` -> `malloc`, never `__libc_start_main`).

use std::borrow::Cow;

/// The public names glibc exports as aliases of a `__libc_NAME` function: the public
/// functions at the same address as a `__libc_` one in libc6-dbg's symbol table of
/// glibc 2.36 (sorted, for `binary_search`).
const LIBC_PUBLIC_ALIASES: &[&str] = &[
    "accept",
    "calloc",
    "chown",
    "close",
    "connect",
    "dn_expand",
    "dn_skipname",
    "fcntl64",
    "fork",
    "free",
    "lseek",
    "lseek64",
    "mallinfo",
    "mallinfo2",
    "malloc",
    "mallopt",
    "memalign",
    "msgrcv",
    "msgsnd",
    "open64",
    "openat64",
    "pause",
    "poll",
    "pread",
    "pread64",
    "pvalloc",
    "pwrite",
    "pwrite64",
    "read",
    "realloc",
    "reallocarray",
    "recv",
    "recvfrom",
    "recvmsg",
    "secure_getenv",
    "select",
    "send",
    "sendmsg",
    "sendto",
    "siglongjmp",
    "sigpause",
    "sigsuspend",
    "sigwait",
    "sigwaitinfo",
    "system",
    "tcdrain",
    "valloc",
    "vfork",
    "waitid",
    "write",
];

/// `name` as users know it: without a symbol version and, for glibc's internal aliases,
/// under the public name. Names that need nothing are borrowed as they are.
pub fn clean_name(name: &str) -> Cow<'_, str> {
    let unversioned = without_version(name);
    // `__GI_x` is glibc's hidden alias of `x` (libc-internal calls bind to it).
    let public = unversioned.strip_prefix("__GI_").filter(|rest| !rest.is_empty()).unwrap_or(unversioned);
    let public = match public.strip_prefix("__libc_") {
        Some(rest) if LIBC_PUBLIC_ALIASES.binary_search(&rest).is_ok() => rest,
        _ => public,
    };
    if public.len() == name.len() {
        Cow::Borrowed(name)
    } else {
        Cow::Owned(public.to_string())
    }
}

/// `name` without a trailing `@VERSION` or `@@VERSION` (a version has a digit: `@plt`,
/// a stub of its own, stays).
fn without_version(name: &str) -> &str {
    let Some(at) = name.find('@') else { return name };
    let (base, version) = (&name[..at], name[at..].trim_start_matches('@'));
    let is_version = !base.is_empty()
        && version.bytes().any(|b| b.is_ascii_digit())
        && version.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.');
    if is_version {
        base
    } else {
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glibc_internal_aliases_become_public_names() {
        assert_eq!(clean_name("__GI___libc_write"), "write");
        assert_eq!(clean_name("__GI___libc_free"), "free");
        assert_eq!(clean_name("__libc_malloc"), "malloc");
        assert_eq!(clean_name("__libc_recvfrom"), "recvfrom");
        assert_eq!(clean_name("__GI_raise"), "raise");
        assert_eq!(clean_name("__GI_abort"), "abort");
        // Internal names without a public alias keep their name (minus __GI_).
        assert_eq!(clean_name("__libc_start_main_impl"), "__libc_start_main_impl");
        assert_eq!(clean_name("__libc_start_call_main"), "__libc_start_call_main");
        assert_eq!(clean_name("__GI___lll_lock_wake"), "__lll_lock_wake");
        assert_eq!(clean_name("__GI___pthread_kill"), "__pthread_kill");
        assert_eq!(clean_name("__GI_"), "__GI_");
    }

    #[test]
    fn symbol_versions_are_cut_off() {
        assert_eq!(clean_name("sem_post@@GLIBC_2.34"), "sem_post");
        assert_eq!(clean_name("sem_post@GLIBC_2.2.5"), "sem_post");
        assert_eq!(clean_name("pthread_testcancel@@GLIBC_2.34"), "pthread_testcancel");
        assert_eq!(clean_name("_ZNSo5flushEv@@GLIBCXX_3.4"), "_ZNSo5flushEv");
        assert_eq!(clean_name("__GI___libc_write@@GLIBC_2.2.5"), "write");
        assert_eq!(clean_name("sem_post@plt"), "sem_post@plt");
        assert_eq!(clean_name("@@GLIBC_2.34"), "@@GLIBC_2.34");
    }

    #[test]
    fn other_names_are_borrowed_unchanged() {
        for name in [
            "main",
            "parse_json",
            "std::thread::sleep",
            "<alloc::vec::Vec<T> as Drop>::drop",
            "__memcpy_avx_unaligned_erms",
            "do_syscall_64 [k]",
        ] {
            assert!(matches!(clean_name(name), Cow::Borrowed(n) if n == name), "{name}");
        }
    }

    #[test]
    fn the_alias_table_is_sorted_for_binary_search() {
        assert!(LIBC_PUBLIC_ALIASES.windows(2).all(|w| w[0] < w[1]));
    }
}
