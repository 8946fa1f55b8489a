//! Gives back the stack pages a thread touched deeper than it runs now.
//!
//! A connection thread's HTTP phase (TLS handshake, request head, admission, the
//! upgrade) runs deeper than its session ever does, and every stack page touched
//! stays in the process's memory for as long as the thread lives: for a session,
//! hours. With thousands of idle sessions those pages were most of the server's
//! memory (5 pages of 4 KiB per session thread at 10,000 peers). Once the HTTP
//! phase's frames have returned, the pages below the current frame hold nothing live,
//! and `madvise(MADV_DONTNEED)` returns them: a later deeper call finds fresh zeroed
//! pages, as on the thread's first use.

use std::ffi::c_void;

/// Releases this thread's stack pages below the caller's frame (keeping a page of
/// margin for the call itself). Best effort: on any failure nothing is released.
#[inline(never)]
pub fn release_unused() {
    let Some(low) = stack_low() else {
        return;
    };
    let page = page_size();
    let marker = 0u8;
    // The address of a local of this (not inlined) frame: everything in use on this
    // thread's stack lies at or above it.
    let here = std::hint::black_box(&marker) as *const u8 as usize;
    let low = low.next_multiple_of(page);
    let Some(end) = here.checked_sub(page).map(|a| a & !(page - 1)) else {
        return;
    };
    if end <= low {
        return;
    }
    // SAFETY: [low, end) is this thread's own stack (its guard page perhaps included,
    // which madvise accepts), strictly below the live frames with a page of margin,
    // so nothing there is referenced: Rust never points at a frame that has returned,
    // and the x86-64 red zone (128 bytes below the stack pointer) is well inside the
    // margin. MADV_DONTNEED on private anonymous memory reads back as zeroes.
    unsafe {
        libc::madvise(low as *mut c_void, end - low, libc::MADV_DONTNEED);
    }
}

/// The lowest address of the calling thread's stack.
fn stack_low() -> Option<usize> {
    // SAFETY: the attribute object is initialised by pthread_getattr_np before it is
    // read, and destroyed once; the out-pointers point at locals.
    unsafe {
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        if libc::pthread_getattr_np(libc::pthread_self(), &mut attr) != 0 {
            return None;
        }
        let mut addr: *mut c_void = std::ptr::null_mut();
        let mut size: libc::size_t = 0;
        let got = libc::pthread_attr_getstack(&attr, &mut addr, &mut size);
        libc::pthread_attr_destroy(&mut attr);
        (got == 0 && !addr.is_null() && size > 0).then_some(addr as usize)
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size)
        .ok()
        .filter(|s| s.is_power_of_two())
        .unwrap_or(4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Touches `depth` bytes of stack below the caller, and returns a value that
    /// depends on them so the compiler keeps them.
    #[inline(never)]
    fn go_deep(depth: usize) -> u8 {
        let mut buf = [0u8; 16 * 1024];
        let n = depth.min(buf.len());
        for (i, b) in buf[..n].iter_mut().enumerate() {
            *b = i as u8;
        }
        std::hint::black_box(&mut buf);
        buf[n / 2]
    }

    /// Whether the page holding `addr` is resident (mincore).
    fn resident(addr: usize) -> bool {
        let page = page_size();
        let mut vec = [0u8; 1];
        // SAFETY: one page, page-aligned, inside this thread's mapped stack.
        let r =
            unsafe { libc::mincore((addr & !(page - 1)) as *mut c_void, page, vec.as_mut_ptr()) };
        r == 0 && vec[0] & 1 == 1
    }

    #[test]
    fn pages_below_the_caller_are_released_and_usable_again() {
        let handle = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(|| {
                let low = stack_low().expect("a thread stack");
                let marker = 0u8;
                let here = std::hint::black_box(&marker) as *const u8 as usize;
                assert!(low < here);
                assert_eq!(go_deep(16 * 1024), 0);
                // 12 KiB below here was touched by go_deep.
                let probe = here - 12 * 1024;
                assert!(resident(probe));
                release_unused();
                assert!(!resident(probe));
                // The thread goes on using its stack as before.
                assert_eq!(go_deep(16 * 1024), 0);
                assert!(resident(probe));
                assert!(resident(here));
            })
            .expect("spawn");
        handle.join().expect("the thread ran");
    }
}
