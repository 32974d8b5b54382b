//! The allocator of a policy instance: free lists by power-of-two size class over a bump pointer.
//!
//! An instance lives for one log entry and is then thrown away, so nothing here returns memory
//! or merges blocks; a freed block waits in its class's list for the next allocation of that
//! class. Rust's default for wasm32 (dlmalloc) does far more per call, and the host's calls
//! into a policy allocate several strings per mutation: with dlmalloc, `open` (a policy that
//! does nothing) burnt about 3.5k fuel per mutation. A policy crate that wants another
//! allocator turns off the SDK's default feature `allocator`.

use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;

/// Blocks are at least 16 bytes and 16-aligned; classes go up to 2^31 bytes.
const MIN_SHIFT: u32 = 4;
const CLASSES: usize = 28;
const BLOCK_ALIGN: usize = 1 << MIN_SHIFT;
const PAGE: usize = 65536;

pub struct SizeClasses {
    state: UnsafeCell<State>,
}

struct State {
    /// The first free block of each class; each free block holds the address of the next.
    free: [usize; CLASSES],
    /// Where the next new block starts, and the end of the memory grown so far.
    top: usize,
    end: usize,
}

// SAFETY: a policy instance has one thread.
unsafe impl Sync for SizeClasses {}

impl SizeClasses {
    pub const fn new() -> Self {
        SizeClasses {
            state: UnsafeCell::new(State {
                free: [0; CLASSES],
                top: 0,
                end: 0,
            }),
        }
    }
}

impl Default for SizeClasses {
    fn default() -> Self {
        Self::new()
    }
}

/// The class of a layout, `None` if it is too big for any. Over-aligned layouts (more than
/// 16) are served fresh from the bump pointer and never recycled, so a recycled block's
/// alignment never matters.
fn class(layout: Layout) -> Option<usize> {
    let size = layout.size().max(BLOCK_ALIGN).checked_next_power_of_two()?;
    let class = (size.trailing_zeros() - MIN_SHIFT) as usize;
    (class < CLASSES).then_some(class)
}

unsafe extern "C" {
    /// Where the linker put the end of the data and the shadow stack: the heap starts here.
    static __heap_base: u8;
}

impl State {
    /// A new block of `size` bytes aligned to `align`, from the bump pointer.
    fn bump(&mut self, size: usize, align: usize) -> *mut u8 {
        if self.top == 0 {
            self.top = core::ptr::addr_of!(__heap_base) as usize;
            self.end = core::arch::wasm32::memory_size(0) * PAGE;
        }
        let Some(start) = self.top.checked_next_multiple_of(align) else {
            return core::ptr::null_mut();
        };
        let Some(stop) = start.checked_add(size) else {
            return core::ptr::null_mut();
        };
        if stop > self.end {
            let pages = (stop - self.end).div_ceil(PAGE);
            if core::arch::wasm32::memory_grow(0, pages) == usize::MAX {
                return core::ptr::null_mut();
            }
            self.end += pages * PAGE;
        }
        self.top = stop;
        start as *mut u8
    }
}

unsafe impl GlobalAlloc for SizeClasses {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: one thread, and no allocation call re-enters another.
        let state = unsafe { &mut *self.state.get() };
        let Some(class) = class(layout) else {
            return core::ptr::null_mut();
        };
        let size = 1usize << (class as u32 + MIN_SHIFT);
        if layout.align() > BLOCK_ALIGN {
            return state.bump(size, layout.align());
        }
        let head = state.free[class];
        if head != 0 {
            // SAFETY: a free block of this class holds the next free block's address.
            state.free[class] = unsafe { *(head as *const usize) };
            return head as *mut u8;
        }
        state.bump(size, BLOCK_ALIGN)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if layout.align() > BLOCK_ALIGN {
            return;
        }
        let Some(class) = class(layout) else {
            return;
        };
        // SAFETY: as in `alloc`; the block is ours, 16-aligned and at least 16 bytes.
        unsafe {
            let state = &mut *self.state.get();
            *(ptr as *mut usize) = state.free[class];
            state.free[class] = ptr as usize;
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract for `realloc` is `Layout::from_size_align(new_size,
        // layout.align())` being valid.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // The block already holds its whole class: a resize within the class stays in place.
        if layout.align() <= BLOCK_ALIGN && class(new_layout) == class(layout) {
            return ptr;
        }
        // SAFETY: as GlobalAlloc's default realloc.
        unsafe {
            let new = self.alloc(new_layout);
            if !new.is_null() {
                core::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            new
        }
    }
}
