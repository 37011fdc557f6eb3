//! Measuring expert residency: which routed experts a workload touches, and how well a cache
//! of a given size would keep them resident.
//!
//! A model larger than memory keeps only some experts resident and reads the others from disk
//! when the router picks them. Whether that works depends on the routing: how many distinct
//! experts fire per layer, how skewed their use is, and how often the same ones recur. This
//! module works on a recorded [`RoutingTrace`] (per token, per MoE layer, the chosen experts)
//! and answers those questions without running a model:
//!
//! - [`trace`]: the trace, its file format (JSON, documented there) and per-layer usage
//!   statistics (counts per expert, distinct experts, top-5 share, normalised entropy).
//! - [`policy`]: cache simulations (LRU, LFU, LRU within a per-layer budget, and Belady's
//!   farthest-next-use as an offline bound), reporting hits and bytes read.
//!
//! Those two are pure: no model, no I/O beyond reading and writing a trace's text. The running
//! side:
//!
//! - [`cache`]: the expert cache, an [`frugal_model::blocks::experts::ExpertStore`] with a
//!   byte budget and one of the policies above, reading misses from the model file.
//! - [`io`]: its reads (`O_DIRECT`, or buffered with the pages dropped after each read).
//! - [`stats`]: its counters (hits, misses, bytes read, stall time).
//! - [`budget`]: `--max-memory`: what of a process budget is left for the cache.

pub mod budget;
pub mod cache;
pub mod io;
pub mod policy;
pub mod stats;
pub mod trace;

pub use budget::{parse_size, MemoryPlan};
pub use cache::{CacheConfig, CacheError, CacheStats, ExpertCache};
pub use policy::{simulate, Capacity, Policy, SimResult};
pub use trace::{LayerUsage, RoutingTrace, TraceError};
