//! A persistent, low-latency thread pool for the many small parallel steps of decoding.
//!
//! Decoding one token runs a few hundred matrix-vector products of tens of microseconds each.
//! Spawning threads per product (`std::thread::scope`) costs tens of microseconds itself, and a
//! general work-stealing pool adds allocation and queueing per call. This pool keeps its workers
//! alive and hands them one job at a time:
//!
//! - A job is a borrowed closure `f(i)` over task indices `0..n`. The caller publishes it by
//!   bumping an epoch counter, then works on tasks itself; every thread claims the next index
//!   from one atomic counter, so uneven tasks balance out. No allocation happens per call.
//! - [`ThreadPool::parallel_for_streams`] hands the indices out differently, for tasks that
//!   read memory in index order (blocks of consecutive weight rows): each thread takes a
//!   contiguous share of the indices in increasing order, and only a thread that has finished
//!   its own share takes tasks from the end of another's. Each thread then reads one
//!   sequential stream, as a single thread does, instead of hopping every task.
//! - After a job, a worker spins (polling the epoch) for a few microseconds, then keeps polling
//!   but yields its core between polls, for up to [`SPIN`], before it parks on a condition
//!   variable: back-to-back products find it awake, an idle process does not burn a core, and
//!   on a machine with more runnable threads than cores the poller does not take the time slice
//!   of the thread whose serial work it is waiting for.
//! - The call returns only after every worker has left the job, which is what makes lending
//!   the closure's borrows (non-`'static` data) to other threads sound.
//! - A panicking task stops the handing-out of further tasks; the first panic is re-raised on the
//!   calling thread once all workers are done, and the pool stays usable.
//! - A `parallel_for` made from inside a task (nested), runs serially on that thread. Calls from
//!   several threads at once take turns.
//!
//! Which thread runs which task is not fixed, so callers make each task's result depend only on
//! its index (as disjoint rows of a product do): the output is then the same for any number of
//! threads.

use std::any::Any;
use std::cell::{Cell, UnsafeCell};
use std::mem::MaybeUninit;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long an idle worker polls for the next job before parking.
pub const SPIN: Duration = Duration::from_micros(1000);

/// Polls an idle worker makes in a tight loop (a few microseconds: the usual gap between
/// two products of one decode step) before it yields the core between polls.
const SPIN_POLLS: u32 = 2000;

thread_local! {
    /// Set while this thread runs tasks of some pool: a nested call then runs serially.
    static IN_TASK: Cell<bool> = const { Cell::new(false) };
}

/// The job a pool holds before its first call.
static NOOP: fn(usize) = |_| {};

/// The job being run: a type-erased borrowed closure and its task count.
#[derive(Clone, Copy)]
struct Job {
    /// Valid from publication until every worker has decremented `Shared::active`.
    f: *const (dyn Fn(usize) + Sync),
    n: usize,
    /// Handed out by per-thread shares ([`ThreadPool::parallel_for_streams`]) rather than
    /// from `Shared::next`.
    streams: bool,
}

/// The unclaimed task indices `front..back` of one thread's share, as `front << 32 | back`
/// (one word, so that the owner's claims from the front and other threads' claims from the
/// back never hand out the same index). Aligned to keep each share on its own cache lines:
/// the owner claims from it at every task.
#[repr(align(128))]
struct Share(AtomicU64);

impl Share {
    /// Claims the first unclaimed index (the owner) or the last (another thread).
    fn claim(&self, first: bool) -> Option<usize> {
        let mut v = self.0.load(Ordering::Relaxed);
        loop {
            let (f, b) = (v >> 32, v & u64::from(u32::MAX));
            if f >= b {
                return None;
            }
            let (next, i) = if first {
                (v + (1 << 32), f)
            } else {
                (v - 1, b - 1)
            };
            // Relaxed: the claim only needs atomicity; the job's data was published by the
            // epoch (Acquire/Release).
            match self
                .0
                .compare_exchange_weak(v, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return Some(i as usize),
                Err(now) => v = now,
            }
        }
    }

    /// Makes `range` the unclaimed indices.
    fn set(&self, range: std::ops::Range<usize>) {
        self.0.store(
            ((range.start as u64) << 32) | range.end as u64,
            Ordering::Relaxed,
        );
    }
}

/// State shared by the caller and the workers.
struct Shared {
    /// Written only by the (single, `call` locked) caller while no worker is in a job; read by
    /// workers after they observe a new `epoch` (Acquire pairs with the caller's Release).
    job: UnsafeCell<Job>,
    /// Bumped once per job (and at shutdown).
    epoch: AtomicUsize,
    /// Next task index to hand out.
    next: AtomicUsize,
    /// Per-thread shares of a streamed job; index 0 is the caller's, `i` worker `i`'s.
    shares: Box<[Share]>,
    /// Workers that have not yet finished the current job.
    active: AtomicUsize,
    /// The first panic of the current job, re-raised by the caller.
    panic: Mutex<Option<Box<dyn Any + Send>>>,
    /// Workers parked (or about to park) on `wake`.
    sleepers: AtomicUsize,
    sleep: Mutex<()>,
    wake: Condvar,
    shutdown: AtomicBool,
    /// Held for the duration of one job: calls from several threads take turns.
    call: Mutex<()>,
}

// SAFETY: `job` is the only non-Sync field; its accesses are ordered by `epoch`/`active` as
// described on the field (one writer while no reader can be active).
unsafe impl Sync for Shared {}
// SAFETY: the raw closure pointer is only dereferenced while the caller keeps it alive.
unsafe impl Send for Shared {}

/// A fixed set of worker threads plus the calling thread. See the module documentation.
pub struct ThreadPool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for ThreadPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreadPool")
            .field("threads", &self.threads())
            .finish()
    }
}

impl ThreadPool {
    /// A pool running jobs on `threads` threads in all: the caller and `threads - 1` workers.
    /// `threads` of 0 counts as 1 (no workers; every call runs serially).
    pub fn new(threads: usize) -> Self {
        let shared = Arc::new(Shared {
            job: UnsafeCell::new(Job {
                f: &NOOP,
                n: 0,
                streams: false,
            }),
            epoch: AtomicUsize::new(0),
            next: AtomicUsize::new(0),
            shares: (0..threads.max(1))
                .map(|_| Share(AtomicU64::new(0)))
                .collect(),
            active: AtomicUsize::new(0),
            panic: Mutex::new(None),
            sleepers: AtomicUsize::new(0),
            sleep: Mutex::new(()),
            wake: Condvar::new(),
            shutdown: AtomicBool::new(false),
            call: Mutex::new(()),
        });
        let workers = (1..threads.max(1))
            .map(|i| {
                let s = Arc::clone(&shared);
                std::thread::Builder::new()
                    .name(format!("frugal-pool-{i}"))
                    .spawn(move || worker(&s, i))
                    // OK because failing to start a thread at start-up is an unrecoverable
                    // resource error (as in std::thread::spawn).
                    .expect("starting a pool thread")
            })
            .collect();
        ThreadPool { shared, workers }
    }

    /// The process-wide pool of `threads` threads (0 counts as 1), started on first use and
    /// kept for the life of the process. Models call this with their configured thread count.
    pub fn global(threads: usize) -> &'static ThreadPool {
        static POOLS: OnceLock<Mutex<Vec<&'static ThreadPool>>> = OnceLock::new();
        let threads = threads.max(1);
        let pools = POOLS.get_or_init(|| Mutex::new(Vec::new()));
        // A poisoned list is still a valid list (pushes are the only writes).
        let mut pools = pools.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = pools.iter().find(|p| p.threads() == threads) {
            return p;
        }
        let p: &'static ThreadPool = Box::leak(Box::new(ThreadPool::new(threads)));
        pools.push(p);
        p
    }

    /// Threads a job runs on, the caller included.
    pub fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Run `f(i)` for every `i` in `0..n_tasks`, spread over the pool's threads, and return
    /// when all have finished. `f` may borrow from the caller. If a task panics, the remaining
    /// unclaimed tasks are skipped and the panic is re-raised here.
    pub fn parallel_for<F>(&self, n_tasks: usize, f: F)
    where
        F: Fn(usize) + Sync,
    {
        self.run(n_tasks, false, &f);
    }

    /// [`ThreadPool::parallel_for`] for tasks that read memory in index order: thread `t`
    /// of `T` runs the indices `t·n/T..(t+1)·n/T` in increasing order, then (having finished)
    /// takes the last unclaimed index of another thread's share, until none is left. A
    /// thread's reads are then one sequential stream, which the hardware prefetchers follow
    /// across tasks as they do for a single thread, while a thread slowed by another process
    /// still has its share's end taken over. Results must depend only on the index, as for
    /// `parallel_for`.
    pub fn parallel_for_streams<F>(&self, n_tasks: usize, f: F)
    where
        F: Fn(usize) + Sync,
    {
        // Indices are kept in 32 bits per share; more tasks than that go by one counter.
        self.run(n_tasks, n_tasks <= u32::MAX as usize, &f);
    }

    /// Runs a job (see `parallel_for`, `parallel_for_streams`).
    fn run(&self, n_tasks: usize, streams: bool, f: &(dyn Fn(usize) + Sync)) {
        if n_tasks == 0 {
            return;
        }
        if n_tasks == 1 || self.workers.is_empty() || IN_TASK.with(Cell::get) {
            (0..n_tasks).for_each(f);
            return;
        }
        let s = &*self.shared;
        // A poisoned lock only means an earlier caller panicked after its job was complete.
        let _turn = s.call.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: only the lifetime is erased. The pointer is dereferenced by workers only
        // between this publication and their `active` decrement, and this function does not
        // return (nor unwind) before `active` is back to 0, so `f` outlives every use.
        let f: *const (dyn Fn(usize) + Sync) = unsafe { std::mem::transmute(f) };
        let job = Job {
            f,
            n: n_tasks,
            streams,
        };
        // SAFETY: `active` is 0 (the previous call waited for it) so no worker reads `job`.
        unsafe { *s.job.get() = job };
        s.next.store(0, Ordering::Relaxed);
        if streams {
            // Share i: indices i·n/t..(i+1)·n/t (in u64: n may be up to u32::MAX).
            let (n, t) = (n_tasks as u64, s.shares.len() as u64);
            for (i, share) in (0..).zip(s.shares.iter()) {
                share.set((n * i / t) as usize..(n * (i + 1) / t) as usize);
            }
        }
        s.active.store(self.workers.len(), Ordering::Relaxed);
        // SeqCst: pairs with the workers' `sleepers` increment so a wake-up is never lost.
        s.epoch.fetch_add(1, Ordering::SeqCst);
        if s.sleepers.load(Ordering::SeqCst) > 0 {
            let _g = s.sleep.lock().unwrap_or_else(|e| e.into_inner());
            s.wake.notify_all();
        }
        run_tasks(s, job, 0);
        let mut spins = 0u32;
        while s.active.load(Ordering::Acquire) != 0 {
            if spins < 1 << 12 {
                std::hint::spin_loop();
                spins += 1;
            } else {
                std::thread::yield_now();
            }
        }
        let panic = s.panic.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(p) = panic {
            resume_unwind(p);
        }
    }

    /// `(0..n_tasks).map(f).collect()`, with the calls spread over the pool (see
    /// [`ThreadPool::parallel_for`]). One allocation: the result.
    pub fn map<T, F>(&self, n_tasks: usize, f: F) -> Vec<T>
    where
        T: Send,
        F: Fn(usize) -> T + Sync,
    {
        let mut out: Vec<MaybeUninit<T>> = Vec::with_capacity(n_tasks);
        // SAFETY: MaybeUninit needs no initialisation; every slot is written below before
        // being read (or the function unwinds, leaking the written ones).
        unsafe { out.set_len(n_tasks) };
        let slots = SendPtr(out.as_mut_ptr());
        self.parallel_for(n_tasks, |i| {
            let v = f(i);
            // SAFETY: `i < n_tasks` and each index runs exactly once, so the writes are to
            // distinct, in-bounds slots.
            unsafe { slots.get().add(i).write(MaybeUninit::new(v)) };
        });
        // SAFETY: parallel_for returned normally, so all n_tasks slots were written.
        let mut out = std::mem::ManuallyDrop::new(out);
        unsafe { Vec::from_raw_parts(out.as_mut_ptr() as *mut T, n_tasks, out.capacity()) }
    }

    /// Call `f(i, chunk)` for the `chunk_len`-element chunks of `data` (the last may be
    /// shorter), spread over the pool.
    pub fn for_each_chunk_mut<T, F>(&self, data: &mut [T], chunk_len: usize, f: F)
    where
        T: Send,
        F: Fn(usize, &mut [T]) + Sync,
    {
        assert!(chunk_len > 0, "for_each_chunk_mut: chunk_len is 0");
        let len = data.len();
        let base = SendPtr(data.as_mut_ptr());
        self.parallel_for(len.div_ceil(chunk_len), |i| {
            let start = i * chunk_len;
            let end = (start + chunk_len).min(len);
            // SAFETY: chunks for distinct `i` are disjoint ranges inside `data`, which is
            // mutably borrowed for the whole call.
            let chunk =
                unsafe { std::slice::from_raw_parts_mut(base.get().add(start), end - start) };
            f(i, chunk);
        });
    }
}

/// A raw pointer that tasks may share: each task touches a disjoint part of what it points to.
struct SendPtr<T>(*mut T);
impl<T> Clone for SendPtr<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for SendPtr<T> {}
// SAFETY: used only for disjoint writes, see the call sites.
unsafe impl<T: Send> Sync for SendPtr<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Send for SendPtr<T> {}

impl<T> SendPtr<T> {
    /// The pointer (a method, so closures capture the whole `Sync` wrapper).
    fn get(self) -> *mut T {
        self.0
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        let s = &*self.shared;
        s.shutdown.store(true, Ordering::SeqCst);
        s.epoch.fetch_add(1, Ordering::SeqCst);
        {
            let _g = s.sleep.lock().unwrap_or_else(|e| e.into_inner());
            s.wake.notify_all();
        }
        for w in self.workers.drain(..) {
            // A worker never panics (tasks are caught), so there is nothing to report.
            let _ = w.join();
        }
    }
}

/// Claim and run tasks of `job` until none is left, catching a panic into `s.panic`; `me` is
/// this thread's share of a streamed job.
fn run_tasks(s: &Shared, job: Job, me: usize) {
    IN_TASK.with(|c| c.set(true));
    // SAFETY: see `parallel_for`: the closure is alive until `active` reaches 0, which this
    // thread's caller (or this worker's decrement after returning) has not yet allowed.
    let f = unsafe { &*job.f };
    let result = catch_unwind(AssertUnwindSafe(|| {
        if job.streams {
            let t = s.shares.len();
            while let Some(i) = s.shares[me].claim(true) {
                f(i);
            }
            // Others' shares from their ends, the next thread's first.
            for k in 1..t {
                let share = &s.shares[(me + k) % t];
                while let Some(i) = share.claim(false) {
                    f(i);
                }
            }
            return;
        }
        loop {
            let i = s.next.fetch_add(1, Ordering::Relaxed);
            if i >= job.n {
                break;
            }
            f(i);
        }
    }));
    IN_TASK.with(|c| c.set(false));
    if let Err(p) = result {
        // Stop handing out tasks; keep the first panic.
        s.next.store(job.n, Ordering::Relaxed);
        for share in s.shares.iter() {
            share.set(0..0);
        }
        let mut slot = s.panic.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            *slot = Some(p);
        }
    }
}

/// Worker `me` (1..threads): wait for a new epoch (spin, then park), run its job, report
/// done; until shutdown.
fn worker(s: &Shared, me: usize) {
    // The epoch the pool was created with, not the current one: a job published before this
    // thread got to run must still be seen as new.
    let mut seen = 0;
    loop {
        let start = Instant::now();
        let mut polls = 0u32;
        loop {
            let e = s.epoch.load(Ordering::Acquire);
            if e != seen {
                seen = e;
                break;
            }
            polls += 1;
            if polls < SPIN_POLLS {
                std::hint::spin_loop();
                continue;
            }
            if polls & 63 != 0 || start.elapsed() < SPIN {
                // Past the first microseconds, offer the core to other runnable threads
                // (the caller's own serial work, on a machine with more threads than cores)
                // between polls, instead of burning the time slice they need.
                std::thread::yield_now();
                continue;
            }
            // Park. `sleepers` is raised before the epoch is re-checked (both SeqCst), so a
            // caller either sees a sleeper and notifies under the lock, or we see its epoch.
            let mut g = s.sleep.lock().unwrap_or_else(|e| e.into_inner());
            s.sleepers.fetch_add(1, Ordering::SeqCst);
            while s.epoch.load(Ordering::SeqCst) == seen {
                g = s.wake.wait(g).unwrap_or_else(|e| e.into_inner());
            }
            s.sleepers.fetch_sub(1, Ordering::SeqCst);
            drop(g);
            seen = s.epoch.load(Ordering::Acquire);
            break;
        }
        if s.shutdown.load(Ordering::Acquire) {
            return;
        }
        // SAFETY: the epoch changed (Acquire), so the caller's write of `job` is visible and
        // it will not write again before this worker decrements `active`.
        let job = unsafe { *s.job.get() };
        run_tasks(s, job, me);
        s.active.fetch_sub(1, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_task_runs_exactly_once() {
        for threads in [1, 2, 3, 8] {
            let pool = ThreadPool::new(threads);
            for n in [0, 1, 2, 7, 100, 1000] {
                let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
                pool.parallel_for(n, |i| {
                    hits[i].fetch_add(1, Ordering::Relaxed);
                });
                assert!(
                    hits.iter().all(|h| h.load(Ordering::Relaxed) == 1),
                    "threads {threads}, n {n}"
                );
            }
        }
    }

    #[test]
    fn results_equal_serial() {
        // A float reduction per task: each task's value is computed the same way whichever
        // thread runs it, so the parallel result equals the serial one bit for bit.
        let data: Vec<f32> = (0..10_000)
            .map(|i| ((i * 7919) % 1000) as f32 * 1e-3)
            .collect();
        let serial: Vec<f32> = data.chunks(97).map(|c| c.iter().sum()).collect();
        for threads in [1, 2, 4, 7] {
            let pool = ThreadPool::new(threads);
            let chunks: Vec<&[f32]> = data.chunks(97).collect();
            let par = pool.map(chunks.len(), |i| chunks[i].iter().sum::<f32>());
            assert_eq!(
                par.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                serial.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                "threads {threads}"
            );
        }
    }

    #[test]
    fn many_calls_back_to_back_and_after_parking() {
        let pool = ThreadPool::new(3);
        let total = AtomicU64::new(0);
        for round in 0..2000u64 {
            pool.parallel_for(5, |i| {
                total.fetch_add(round * 5 + i as u64, Ordering::Relaxed);
            });
            if round == 1000 {
                // Long enough for the workers to park.
                std::thread::sleep(SPIN * 5);
            }
        }
        let n = 2000 * 5;
        assert_eq!(total.load(Ordering::Relaxed), (n * (n - 1) / 2) as u64);
    }

    /// Streamed jobs: every index runs once; within each thread's share the owner runs a
    /// consecutive increasing run from the share's start (no one else claims a front), every
    /// other thread takes indices of that share in decreasing order (from its end), and the
    /// caller owns the first share.
    #[test]
    fn streams_run_each_share_in_order_and_take_over_from_the_end() {
        use std::collections::HashMap;
        use std::sync::Mutex;
        for threads in [1, 2, 3, 5] {
            let pool = ThreadPool::new(threads);
            for n in [0, 1, 2, 7, 100, 1000] {
                let ran: Mutex<HashMap<std::thread::ThreadId, Vec<usize>>> = Mutex::default();
                pool.parallel_for_streams(n, |i| {
                    // Uneven, slow-ish tasks so that threads overtake each other.
                    let spin = if i % 7 == 0 { 20_000 } else { 500 };
                    (0..spin).for_each(|k| {
                        std::hint::black_box(k);
                    });
                    let me = std::thread::current().id();
                    ran.lock().unwrap().entry(me).or_default().push(i);
                });
                let ran = ran.into_inner().unwrap();
                let mut all: Vec<usize> = ran.values().flatten().copied().collect();
                all.sort_unstable();
                assert_eq!(all, (0..n).collect::<Vec<_>>(), "threads {threads}, n {n}");
                if n < 2 {
                    continue;
                }
                let share = |i: usize| (0..threads).find(|&t| i < n * (t + 1) / threads).unwrap();
                let caller = std::thread::current().id();
                assert_eq!(ran[&caller].first(), Some(&0), "threads {threads}, n {n}");
                for seq in ran.values() {
                    for t in 0..threads {
                        let part: Vec<usize> =
                            seq.iter().copied().filter(|&i| share(i) == t).collect();
                        let Some(&first) = part.first() else { continue };
                        let owned =
                            first == n * t / threads && part.windows(2).all(|w| w[1] == w[0] + 1);
                        let taken = part.windows(2).all(|w| w[1] < w[0]);
                        assert!(owned || taken, "threads {threads}, n {n}: {part:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn chunks_are_disjoint_and_complete() {
        let pool = ThreadPool::new(4);
        let mut v = vec![0usize; 1003];
        pool.for_each_chunk_mut(&mut v, 10, |i, c| {
            for (j, x) in c.iter_mut().enumerate() {
                *x = i * 10 + j;
            }
        });
        assert_eq!(v, (0..1003).collect::<Vec<_>>());
    }

    #[test]
    fn panic_propagates_and_pool_survives() {
        let pool = ThreadPool::new(3);
        for streams in [false, true] {
            let run = |f: &(dyn Fn(usize) + Sync)| {
                if streams {
                    pool.parallel_for_streams(64, f)
                } else {
                    pool.parallel_for(64, f)
                }
            };
            let r = catch_unwind(AssertUnwindSafe(|| {
                run(&|i| {
                    if i == 40 {
                        panic!("task 40 failed");
                    }
                })
            }));
            let msg = r.expect_err("the panic must reach the caller");
            assert_eq!(msg.downcast_ref::<&str>(), Some(&"task 40 failed"));
            // Still works, and the earlier panic is not reported again.
            let sum = AtomicUsize::new(0);
            run(&|i| {
                sum.fetch_add(i, Ordering::Relaxed);
            });
            assert_eq!(
                sum.load(Ordering::Relaxed),
                64 * 63 / 2,
                "streams {streams}"
            );
        }
    }

    #[test]
    fn nested_calls_run_serially() {
        let pool = ThreadPool::new(4);
        let out = pool.map(8, |i| pool.map(8, |j| i * 8 + j).into_iter().sum::<usize>());
        let expect: Vec<usize> = (0..8).map(|i| (0..8).map(|j| i * 8 + j).sum()).collect();
        assert_eq!(out, expect);
    }

    #[test]
    fn concurrent_callers_take_turns() {
        let pool = ThreadPool::new(3);
        let total = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..200 {
                        pool.parallel_for(10, |i| {
                            total.fetch_add(i, Ordering::Relaxed);
                        });
                    }
                });
            }
        });
        assert_eq!(total.load(Ordering::Relaxed), 4 * 200 * 45);
    }

    #[test]
    fn global_pool_is_shared_per_thread_count() {
        let a = ThreadPool::global(2);
        let b = ThreadPool::global(2);
        assert!(std::ptr::eq(a, b));
        assert_eq!(a.threads(), 2);
        assert_eq!(ThreadPool::global(0).threads(), 1);
    }
}
