//! Process-wide SQLite settings, made once before the first connection
//! opens (SQLite takes them only before it initializes).
//!
//! - Memory statistics off: with them on, every allocation SQLite makes
//!   takes one global mutex, which every reader's worker thread then
//!   contends for (it showed up as a quarter of a list request's CPU time,
//!   `bench/profile --scenario list`).
//! - SQLite's allocations go to mimalloc, as Rust's do (`main.rs`). SQLite
//!   is C and calls the C library's `malloc` otherwise: in the image's
//!   static build that is musl's, which cost a SQLite list request about
//!   twice the CPU of the glibc build (docs/performance.md).

use std::ffi::{c_int, c_void};

use libmimalloc_sys as mi;
use libsqlite3_sys as ffi;

/// Apply the settings; the first call does, later ones return at once.
pub(super) fn configure() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let mimalloc = mimalloc();
        // SAFETY: called before any connection exists (the backend opens
        // none before this), from one thread (`Once`). SQLite copies the
        // methods; the functions they name live as long as the process.
        let settings = unsafe {
            [
                ("memory statistics off", ffi::sqlite3_config(ffi::SQLITE_CONFIG_MEMSTATUS, 0 as c_int)),
                (
                    "mimalloc",
                    ffi::sqlite3_config(ffi::SQLITE_CONFIG_MALLOC, &mimalloc as *const ffi::sqlite3_mem_methods),
                ),
            ]
        };
        for (setting, done) in settings {
            if done != ffi::SQLITE_OK {
                tracing::info!(code = done, setting, "SQLite was initialized already; its default stays");
            }
        }
    });
}

fn mimalloc() -> ffi::sqlite3_mem_methods {
    ffi::sqlite3_mem_methods {
        xMalloc: Some(malloc),
        xFree: Some(free),
        xRealloc: Some(realloc),
        xSize: Some(size),
        xRoundup: Some(roundup),
        xInit: Some(init),
        xShutdown: Some(shutdown),
        pAppData: std::ptr::null_mut(),
    }
}

// SQLite asks for sizes as positive `int`s and wants 8-byte alignment,
// which mimalloc's every block has.

unsafe extern "C" fn malloc(bytes: c_int) -> *mut c_void {
    unsafe { mi::mi_malloc(usize::try_from(bytes).unwrap_or(0)) }
}

unsafe extern "C" fn free(block: *mut c_void) {
    unsafe { mi::mi_free(block) }
}

unsafe extern "C" fn realloc(block: *mut c_void, bytes: c_int) -> *mut c_void {
    unsafe { mi::mi_realloc(block, usize::try_from(bytes).unwrap_or(0)) }
}

unsafe extern "C" fn size(block: *mut c_void) -> c_int {
    c_int::try_from(unsafe { mi::mi_usable_size(block) }).unwrap_or(c_int::MAX)
}

unsafe extern "C" fn roundup(bytes: c_int) -> c_int {
    c_int::try_from(unsafe { mi::mi_good_size(usize::try_from(bytes).unwrap_or(0)) }).unwrap_or(bytes)
}

unsafe extern "C" fn init(_: *mut c_void) -> c_int {
    ffi::SQLITE_OK
}

unsafe extern "C" fn shutdown(_: *mut c_void) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlites_memory_comes_from_mimalloc() {
        configure();
        // SAFETY: a block SQLite allocates, sized and freed by SQLite.
        unsafe {
            let block = ffi::sqlite3_malloc(1000);
            assert!(!block.is_null());
            assert!(mi::mi_is_in_heap_region(block), "SQLite's block is not mimalloc's");
            assert!(ffi::sqlite3_msize(block) >= 1000);
            ffi::sqlite3_free(block);
        }
    }
}
