//! The expert cache: a bounded [`ExpertStore`] that keeps some routed experts in its own
//! memory and reads the others from the model file when the router picks them.
//!
//! Memory is one allocation of equal **slots**, each large enough for the largest expert's
//! three matrices, read as [`ALIGN`]-aligned supersets (see [`super::io`]); a freed slot is
//! reused as is, so the footprint never grows past `slots × slot size` and the allocator
//! never fragments. A slot's pages are only backed by memory once written.
//!
//! A request ([`ExpertStore::with_experts`]) pins each resident expert it needs, claims a
//! slot for each miss (a free one, else the eviction policy's victim among unpinned
//! residents), hands the misses to the I/O threads (several reads in flight), waits for them
//! (the **stall**), runs the computation on the slots' bytes, and unpins. When no slot can
//! be claimed (every slot pinned: a budget below one layer's working set), the expert is read
//! into a temporary buffer for this request only (an **overflow read**).
//!
//! [`ExpertStore::prefetch`] claims slots the same way and queues the reads behind the
//! demand reads; a later request waits for an expert still in flight instead of reading it
//! again.
//!
//! A read that fails (I/O error, file shorter than its header says) is logged once and the
//! expert's bytes are copied from the mapped file instead (the same bytes), counted in
//! [`CacheStats::fallbacks`]. The mapped views are otherwise never touched.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use frugal_model::blocks::experts::{ExpertBytes, ExpertStore, RoutedExpert};

use super::io::{align_up, span, AlignedBuf, RangeReader, ALIGN};
use super::policy::Policy;
pub use super::stats::CacheStats;

/// Where one routed expert lies: its layer and id, the file, and its three matrices' offsets.
#[derive(Clone, Debug)]
pub struct ExpertLocation {
    /// Decoder layer index.
    pub layer: usize,
    /// Expert id within the layer.
    pub expert: usize,
    /// Index into the cache's file list.
    pub file: usize,
    /// `(offset, length)` of gate, up and down in the file.
    pub parts: [(u64, usize); 3],
}

impl ExpertLocation {
    /// Bytes of the three matrices.
    pub fn len(&self) -> usize {
        self.parts.iter().map(|p| p.1).sum()
    }

    /// Whether the expert has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Slot bytes the expert needs: each part's aligned span (a part starting mid-block
    /// spans one block more than its length rounded up).
    fn slot_bytes(&self) -> usize {
        self.parts.iter().map(|&(o, l)| span(o, l).1).sum()
    }
}

/// Settings of an [`ExpertCache`].
#[derive(Clone, Copy, Debug)]
pub struct CacheConfig {
    /// Bytes the slots may take in all.
    pub capacity: u64,
    /// Whom to evict: [`Policy::Lru`], [`Policy::Lfu`] or [`Policy::PerLayerLru`].
    pub policy: Policy,
    /// I/O threads (reads in flight at once); at least 1.
    pub io_threads: usize,
    /// Whether [`ExpertStore::wants_prefetch`] says yes (the model then calls
    /// [`ExpertStore::prefetch`] with the next MoE layer's likely experts).
    pub prefetch: bool,
}

/// Why a cache could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// A routed expert's bytes are not a view into a mapped model file.
    #[error("routed expert {expert} of layer {layer} is not stored in a mapped model file (a converted or quantized-on-load model cannot be read back from disk)")]
    NotInFile {
        /// Decoder layer.
        layer: usize,
        /// Expert id.
        expert: usize,
    },
    /// The model file could not be opened for reading.
    #[error("{}: {source}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The eviction policy cannot run online.
    #[error("{0} is not a policy a running cache can use (lru, lfu, per-layer)")]
    Policy(&'static str),
    /// The model has no routed experts.
    #[error("the model has no routed experts to cache")]
    NoExperts,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Absent,
    /// A read into `slot` is queued or running.
    Loading,
    Resident,
    /// The read failed; the slot holds nothing yet (the requester copies the mapped bytes).
    Failed,
}

#[derive(Debug)]
struct Entry {
    state: State,
    slot: Option<usize>,
    pins: u32,
    last_use: u64,
    uses: u64,
    /// Brought in by a prefetch and not used since.
    prefetched: bool,
}

#[derive(Debug, Default)]
struct Counters {
    hits: u64,
    misses: u64,
    prefetch_hits: u64,
    prefetch_reads: u64,
    evictions: u64,
    overflow_reads: u64,
    fallbacks: u64,
    bytes_read: u64,
    read_time: Duration,
    stall_time: Duration,
}

#[derive(Debug)]
struct State_ {
    entries: Vec<Entry>,
    /// Which entry each slot holds.
    slot_owner: Vec<Option<usize>>,
    free: Vec<usize>,
    /// Residents (and loading) per layer index, for the per-layer policy.
    per_layer: Vec<usize>,
    tick: u64,
    /// Reads in flight, and since when the count was last above zero.
    in_flight: usize,
    busy_since: Option<Instant>,
    queue: VecDeque<usize>,
    shutdown: bool,
    c: Counters,
}

/// What the I/O threads share with the cache ('static: no borrowed model data).
#[derive(Debug)]
struct Shared {
    locations: Vec<ExpertLocation>,
    /// Each expert's byte offset of its gate/up/down region within a slot.
    regions: Vec<[usize; 3]>,
    readers: Vec<RangeReader>,
    slot_size: usize,
    arena: AlignedBuf,
    state: Mutex<State_>,
    /// Signalled when a read finishes (requesters wait) and when work is queued (workers wait).
    done: Condvar,
    work: Condvar,
    failed_once: AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State_> {
        // A poisoned lock means a thread panicked mid-update: a bug; keep the data as is.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads expert `idx` into `buf` (its slot, or a temporary buffer): each part at its
    /// region.
    fn read_into(&self, idx: usize, buf: &mut [u8]) -> std::io::Result<()> {
        let loc = &self.locations[idx];
        let reader = &self.readers[loc.file];
        for (p, &(off, len)) in loc.parts.iter().enumerate() {
            let start = self.regions[idx][p];
            let span_len = span(off, len).1;
            reader.read_range(off, len, &mut buf[start..start + span_len])?;
        }
        Ok(())
    }

    /// The three matrices of expert `idx` within `buf` (laid out by `read_into`).
    fn parts_in<'b>(&self, idx: usize, buf: &'b [u8]) -> ExpertBytes<'b> {
        let loc = &self.locations[idx];
        let at = |p: usize| {
            let (off, len) = loc.parts[p];
            let start = self.regions[idx][p] + span(off, len).2;
            &buf[start..start + len]
        };
        ExpertBytes {
            gate: at(0),
            up: at(1),
            down: at(2),
        }
    }

    fn log_failure(&self, idx: usize, e: &std::io::Error) {
        if !self.failed_once.swap(true, Ordering::Relaxed) {
            let loc = &self.locations[idx];
            tracing::warn!(
                "reading expert {} of layer {} from {} failed ({e}); using the mapped file for failed reads (further failures are counted, not logged)",
                loc.expert,
                loc.layer,
                self.readers[loc.file].path().display()
            );
        }
    }

    fn start_read(st: &mut State_) {
        if st.in_flight == 0 {
            st.busy_since = Some(Instant::now());
        }
        st.in_flight += 1;
    }

    fn end_read(st: &mut State_) {
        st.in_flight -= 1;
        if st.in_flight == 0 {
            if let Some(t) = st.busy_since.take() {
                st.c.read_time += t.elapsed();
            }
        }
    }

    /// An I/O thread: take queued reads until shutdown.
    fn worker(&self) {
        let mut st = self.lock();
        loop {
            if st.shutdown {
                return;
            }
            let Some(idx) = st.queue.pop_front() else {
                st = self.work.wait(st).unwrap_or_else(|e| e.into_inner());
                continue;
            };
            // OK: a queued entry is Loading and owns a slot until the read ends.
            let slot = st.entries[idx].slot.expect("queued read has a slot");
            Self::start_read(&mut st);
            drop(st);
            // SAFETY: the slot belongs to this Loading entry; nobody reads it until it is
            // marked Resident, and it cannot be evicted while Loading.
            let buf = unsafe { self.arena.range_mut(slot * self.slot_size, self.slot_size) };
            let result = self.read_into(idx, buf);
            if let Err(e) = &result {
                self.log_failure(idx, e);
            }
            st = self.lock();
            Self::end_read(&mut st);
            let e = &mut st.entries[idx];
            e.state = if result.is_ok() {
                State::Resident
            } else {
                State::Failed
            };
            if result.is_ok() {
                st.c.bytes_read += self.locations[idx].len() as u64;
            }
            self.done.notify_all();
        }
    }
}

/// A bounded cache of routed experts, read from the model file on demand (see the module
/// documentation). Implements [`ExpertStore`].
pub struct ExpertCache<'a> {
    shared: Arc<Shared>,
    /// The mapped views, for fallback when a read fails.
    mapped: Vec<ExpertBytes<'a>>,
    /// `(layer, expert)` → entry index: `layer_base[layer] + expert`.
    layer_base: Vec<Option<usize>>,
    /// Experts per layer, for bounds checks.
    layer_len: Vec<usize>,
    /// Slots each layer may hold under the per-layer policy.
    layer_quota: usize,
    policy: Policy,
    prefetch: bool,
    io_threads: usize,
    workers: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for ExpertCache<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExpertCache")
            .field("experts", &self.mapped.len())
            .field("slots", &self.shared.slot_owner_len())
            .field("slot_size", &self.shared.slot_size)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl Shared {
    fn slot_owner_len(&self) -> usize {
        self.lock().slot_owner.len()
    }
}

impl<'a> ExpertCache<'a> {
    /// A cache over `experts` (each with its mapped bytes and where they lie: `locate` maps a
    /// mapped slice to `(file path, offset)`, e.g. `ModelFiles::locate`).
    pub fn for_experts<'f>(
        experts: &[RoutedExpert<'a>],
        locate: impl Fn(&[u8]) -> Option<(&'f std::path::Path, u64)>,
        config: CacheConfig,
    ) -> Result<ExpertCache<'a>, CacheError> {
        let mut paths: Vec<PathBuf> = Vec::new();
        let mut locations = Vec::with_capacity(experts.len());
        for e in experts {
            let not_in_file = || CacheError::NotInFile {
                layer: e.layer,
                expert: e.expert,
            };
            let mut parts = [(0u64, 0usize); 3];
            let mut file = None;
            for (p, bytes) in [e.parts.gate, e.parts.up, e.parts.down].iter().enumerate() {
                let (path, off) = locate(bytes).ok_or_else(not_in_file)?;
                let i = match paths.iter().position(|q| q == path) {
                    Some(i) => i,
                    None => {
                        paths.push(path.to_owned());
                        paths.len() - 1
                    }
                };
                // The three matrices of one expert sit in one file (GGUF splits and
                // safetensors shards keep a tensor whole; an expert split over files is
                // read part by part from the first file's reader only if it is the same).
                if *file.get_or_insert(i) != i {
                    return Err(not_in_file());
                }
                parts[p] = (off, bytes.len());
            }
            locations.push(ExpertLocation {
                layer: e.layer,
                expert: e.expert,
                file: file.unwrap_or(0),
                parts,
            });
        }
        let readers = paths
            .iter()
            .map(|p| {
                RangeReader::open(p).map_err(|source| CacheError::Open {
                    path: p.clone(),
                    source,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mapped = experts.iter().map(|e| e.parts).collect();
        Self::new(locations, mapped, readers, config)
    }

    /// A cache over experts at `locations` in `readers`' files, with `mapped` (the same
    /// bytes, in the same order) as the fallback when a read fails.
    pub fn new(
        locations: Vec<ExpertLocation>,
        mapped: Vec<ExpertBytes<'a>>,
        readers: Vec<RangeReader>,
        config: CacheConfig,
    ) -> Result<ExpertCache<'a>, CacheError> {
        if locations.is_empty() {
            return Err(CacheError::NoExperts);
        }
        if config.policy == Policy::Belady {
            return Err(CacheError::Policy(config.policy.name()));
        }
        assert_eq!(locations.len(), mapped.len());
        let layers = locations.iter().map(|l| l.layer).max().unwrap_or(0) + 1;
        let mut layer_len = vec![0usize; layers];
        for l in &locations {
            layer_len[l.layer] = layer_len[l.layer].max(l.expert + 1);
        }
        let mut layer_base = vec![None; layers];
        let mut next = 0;
        for (l, &n) in layer_len.iter().enumerate() {
            if n > 0 {
                layer_base[l] = Some(next);
                next += n;
            }
        }
        // Entries indexed by layer_base + expert; reorder locations and mapped to match.
        let mut order: Vec<Option<usize>> = vec![None; next];
        for (i, l) in locations.iter().enumerate() {
            // OK: layer_base is set for every layer with an expert.
            order[layer_base[l.layer].expect("layer has experts") + l.expert] = Some(i);
        }
        if order.iter().any(Option::is_none) {
            // Expert ids with gaps: not a model's layout; treat as a bug in the caller.
            panic!("expert ids of a layer must be 0..n");
        }
        let order: Vec<usize> = order.into_iter().flatten().collect();
        let locations: Vec<ExpertLocation> = order.iter().map(|&i| locations[i].clone()).collect();
        let mapped: Vec<ExpertBytes<'a>> = order.iter().map(|&i| mapped[i]).collect();

        let regions: Vec<[usize; 3]> = locations
            .iter()
            .map(|loc| {
                let mut r = [0; 3];
                let mut at = 0;
                for (p, &(o, l)) in loc.parts.iter().enumerate() {
                    r[p] = at;
                    at += span(o, l).1;
                }
                r
            })
            .collect();
        let slot_size = locations
            .iter()
            .map(ExpertLocation::slot_bytes)
            .max()
            .unwrap_or(ALIGN);
        let slot_size = align_up(slot_size as u64) as usize;
        let slots = (config.capacity / slot_size as u64) as usize;
        let moe_layers = layer_len.iter().filter(|&&n| n > 0).count().max(1);
        let layer_quota = slots / moe_layers;
        let entries = (0..locations.len())
            .map(|_| Entry {
                state: State::Absent,
                slot: None,
                pins: 0,
                last_use: 0,
                uses: 0,
                prefetched: false,
            })
            .collect();
        let shared = Arc::new(Shared {
            locations,
            regions,
            readers,
            slot_size,
            arena: AlignedBuf::new(slots * slot_size),
            state: Mutex::new(State_ {
                entries,
                slot_owner: vec![None; slots],
                free: (0..slots).rev().collect(),
                per_layer: vec![0; layers],
                tick: 0,
                in_flight: 0,
                busy_since: None,
                queue: VecDeque::new(),
                shutdown: false,
                c: Counters::default(),
            }),
            done: Condvar::new(),
            work: Condvar::new(),
            failed_once: AtomicBool::new(false),
        });
        let workers = (0..config.io_threads.max(1))
            .map(|i| {
                let s = Arc::clone(&shared);
                std::thread::Builder::new()
                    .name(format!("expert-io-{i}"))
                    .spawn(move || s.worker())
                    .map_err(|source| CacheError::Open {
                        path: PathBuf::from("<expert I/O thread>"),
                        source,
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ExpertCache {
            shared,
            mapped,
            layer_base,
            layer_len,
            layer_quota,
            policy: config.policy,
            prefetch: config.prefetch,
            io_threads: config.io_threads.max(1),
            workers,
        })
    }

    /// The size of one slot (the largest expert's aligned bytes).
    pub fn slot_size(&self) -> usize {
        self.shared.slot_size
    }

    /// The counters so far.
    pub fn stats(&self) -> CacheStats {
        let st = self.shared.lock();
        let mut read = st.c.read_time;
        if let Some(t) = st.busy_since {
            read += t.elapsed();
        }
        let resident: Vec<usize> = st
            .entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.state == State::Resident)
            .map(|(i, _)| i)
            .collect();
        CacheStats {
            hits: st.c.hits,
            misses: st.c.misses,
            prefetch_hits: st.c.prefetch_hits,
            prefetch_reads: st.c.prefetch_reads,
            evictions: st.c.evictions,
            overflow_reads: st.c.overflow_reads,
            fallbacks: st.c.fallbacks,
            bytes_read: st.c.bytes_read,
            read_seconds: read.as_secs_f64(),
            stall_seconds: st.c.stall_time.as_secs_f64(),
            resident_bytes: resident
                .iter()
                .map(|&i| self.shared.locations[i].len() as u64)
                .sum(),
            resident_experts: resident.len() as u64,
            capacity_bytes: (st.slot_owner.len() * self.shared.slot_size) as u64,
            slots: st.slot_owner.len() as u64,
            direct_io: self.shared.readers.iter().all(RangeReader::is_direct),
        }
    }

    fn index(&self, layer: usize, expert: usize) -> Option<usize> {
        let base = (*self.layer_base.get(layer)?)?;
        (expert < self.layer_len[layer]).then_some(base + expert)
    }

    /// A slot for entry `idx` of `layer`: a free one, else the policy's victim (evicted).
    /// `None` when every candidate is pinned or loading.
    fn claim_slot(&self, st: &mut State_, idx: usize, layer: usize) -> Option<usize> {
        let per_layer = self.policy == Policy::PerLayerLru;
        let within_quota = !per_layer || st.per_layer[layer] < self.layer_quota;
        let slot = if within_quota && !st.free.is_empty() {
            st.free.pop()?
        } else {
            // The victim: unpinned residents (of this layer under the per-layer policy).
            let locations = &self.shared.locations;
            let victim = st
                .slot_owner
                .iter()
                .flatten()
                .copied()
                .filter(|&o| {
                    let e = &st.entries[o];
                    e.pins == 0
                        && matches!(e.state, State::Resident | State::Failed)
                        && (!per_layer || locations[o].layer == layer)
                })
                .min_by_key(|&o| {
                    let e = &st.entries[o];
                    match self.policy {
                        Policy::Lfu => (e.uses, e.last_use),
                        _ => (0, e.last_use),
                    }
                })?;
            let e = &mut st.entries[victim];
            let slot = e.slot.take()?;
            e.state = State::Absent;
            e.prefetched = false;
            st.per_layer[locations[victim].layer] -= 1;
            st.c.evictions += 1;
            slot
        };
        st.slot_owner[slot] = Some(idx);
        st.per_layer[layer] += 1;
        let e = &mut st.entries[idx];
        e.slot = Some(slot);
        e.state = State::Loading;
        Some(slot)
    }

    /// Reads expert `idx` into `buf`, a temporary buffer of one slot's size (the mapped bytes
    /// if the read fails).
    fn read_overflow(&self, idx: usize, buf: &AlignedBuf) {
        let shared = &*self.shared;
        // SAFETY: a fresh buffer, written by this thread only.
        let b = unsafe { buf.range_mut(0, buf.len()) };
        Shared::start_read(&mut shared.lock());
        let r = shared.read_into(idx, b);
        let mut st = shared.lock();
        Shared::end_read(&mut st);
        match r {
            Ok(()) => st.c.bytes_read += shared.locations[idx].len() as u64,
            Err(e) => {
                shared.log_failure(idx, &e);
                st.c.fallbacks += 1;
                drop(st);
                self.copy_mapped(idx, b);
            }
        }
    }

    /// Copies the mapped bytes of `idx` into `buf` at its regions (after a failed read).
    fn copy_mapped(&self, idx: usize, buf: &mut [u8]) {
        let loc = &self.shared.locations[idx];
        let m = &self.mapped[idx];
        for (p, src) in [m.gate, m.up, m.down].iter().enumerate() {
            let start = self.shared.regions[idx][p] + span(loc.parts[p].0, loc.parts[p].1).2;
            buf[start..start + src.len()].copy_from_slice(src);
        }
    }
}

impl Drop for ExpertCache<'_> {
    fn drop(&mut self) {
        self.shared.lock().shutdown = true;
        self.shared.work.notify_all();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// Where a requested expert's bytes are for one request (with its entry index).
enum Held {
    Slot(usize, usize),
    /// A temporary buffer (no slot could be claimed).
    Overflow(AlignedBuf, usize),
    /// Being read into a temporary buffer.
    Pending(usize),
}

impl ExpertStore for ExpertCache<'_> {
    fn with_experts(&self, layer: usize, experts: &[usize], f: &mut dyn FnMut(&[ExpertBytes<'_>])) {
        let shared = &*self.shared;
        let mut held: Vec<Held> = Vec::with_capacity(experts.len());
        let mut pinned: Vec<usize> = Vec::new();
        let mut overflow: Vec<usize> = Vec::new();
        let mut waits = false;
        {
            let mut st = shared.lock();
            let mut queued = false;
            for (k, &e) in experts.iter().enumerate() {
                // The cache was made from this model's routed experts: an unknown id is a bug.
                let idx = self
                    .index(layer, e)
                    .unwrap_or_else(|| panic!("expert {e} of layer {layer} is not in the cache"));
                st.tick += 1;
                let tick = st.tick;
                let entry = &mut st.entries[idx];
                entry.uses += 1;
                entry.last_use = tick;
                match entry.state {
                    State::Resident | State::Loading | State::Failed => {
                        waits |= entry.state != State::Resident;
                        entry.pins += 1;
                        let slot = entry.slot.expect("a resident expert has a slot");
                        let pre = std::mem::take(&mut entry.prefetched);
                        st.c.hits += 1;
                        st.c.prefetch_hits += pre as u64;
                        pinned.push(idx);
                        held.push(Held::Slot(slot, idx));
                    }
                    State::Absent => {
                        st.c.misses += 1;
                        match self.claim_slot(&mut st, idx, layer) {
                            Some(slot) => {
                                st.entries[idx].pins += 1;
                                // Demand reads go before queued prefetches.
                                st.queue.push_front(idx);
                                queued = true;
                                waits = true;
                                pinned.push(idx);
                                held.push(Held::Slot(slot, idx));
                            }
                            None => {
                                st.c.overflow_reads += 1;
                                overflow.push(k);
                                held.push(Held::Pending(idx));
                            }
                        }
                    }
                }
            }
            if queued {
                shared.work.notify_all();
            }
        }
        let stall = Instant::now();
        // Overflow reads: in scoped threads (as many as the I/O threads), while the I/O
        // threads read the rest.
        if !overflow.is_empty() {
            let bufs: Vec<(usize, usize, AlignedBuf)> = overflow
                .iter()
                .map(|&k| match held[k] {
                    Held::Pending(idx) => (k, idx, AlignedBuf::new(shared.slot_size)),
                    _ => unreachable!("overflow entries are pending"),
                })
                .collect();
            let chunk = bufs.len().div_ceil(self.io_threads);
            std::thread::scope(|scope| {
                for part in bufs.chunks(chunk) {
                    scope.spawn(move || {
                        for (_, idx, buf) in part {
                            self.read_overflow(*idx, buf);
                        }
                    });
                }
            });
            for (k, idx, buf) in bufs {
                held[k] = Held::Overflow(buf, idx);
            }
        }
        if waits {
            let mut st = shared.lock();
            loop {
                // Failed reads: this request serves them from the map, once.
                let failed: Vec<usize> = pinned
                    .iter()
                    .copied()
                    .filter(|&i| st.entries[i].state == State::Failed)
                    .collect();
                for &i in &failed {
                    st.entries[i].state = State::Loading;
                    st.c.fallbacks += 1;
                    let slot = st.entries[i].slot.expect("a failed read has a slot");
                    drop(st);
                    // SAFETY: the entry is Loading again and pinned: no one else touches
                    // the slot until it is Resident.
                    let b = unsafe {
                        shared
                            .arena
                            .range_mut(slot * shared.slot_size, shared.slot_size)
                    };
                    self.copy_mapped(i, b);
                    st = shared.lock();
                    st.entries[i].state = State::Resident;
                }
                if pinned
                    .iter()
                    .all(|&i| st.entries[i].state == State::Resident)
                {
                    break;
                }
                st = shared.done.wait(st).unwrap_or_else(|e| e.into_inner());
            }
            st.c.stall_time += stall.elapsed();
        } else if !overflow.is_empty() {
            shared.lock().c.stall_time += stall.elapsed();
        }

        let bytes: Vec<ExpertBytes<'_>> = held
            .iter()
            .map(|h| match h {
                // SAFETY: the entry is pinned and Resident: its slot is not written until it
                // is unpinned and evicted.
                &Held::Slot(slot, idx) => shared.parts_in(idx, unsafe {
                    shared
                        .arena
                        .range(slot * shared.slot_size, shared.slot_size)
                }),
                // SAFETY: our own buffer, fully written above.
                Held::Overflow(buf, idx) => {
                    shared.parts_in(*idx, unsafe { buf.range(0, buf.len()) })
                }
                Held::Pending(_) => unreachable!("every overflow was read"),
            })
            .collect();
        f(&bytes);
        drop(bytes);
        let mut st = shared.lock();
        for &i in &pinned {
            st.entries[i].pins -= 1;
        }
    }

    fn prefetch(&self, layer: usize, experts: &[usize]) {
        let shared = &*self.shared;
        let mut st = shared.lock();
        let mut queued = false;
        for &e in experts {
            let Some(idx) = self.index(layer, e) else {
                continue;
            };
            if st.entries[idx].state != State::Absent {
                continue;
            }
            if self.claim_slot(&mut st, idx, layer).is_none() {
                // Everything pinned: the demand path will read it.
                break;
            }
            st.tick += 1;
            let tick = st.tick;
            let entry = &mut st.entries[idx];
            entry.last_use = tick;
            entry.prefetched = true;
            st.c.prefetch_reads += 1;
            st.queue.push_back(idx);
            queued = true;
        }
        if queued {
            shared.work.notify_all();
        }
    }

    fn wants_prefetch(&self) -> bool {
        self.prefetch
    }
}

#[cfg(test)]
#[path = "cache_tests.rs"]
mod tests;
