//! fedstac: static, federated STAC catalogues for CMIP6 archives.
//!
//! Data flows through one module per stage, each with a narrow public face:
//! [`scan`] (walk roots, match recipes) → [`read`] (netCDF headers, checksums,
//! with the [`cache`]) → [`recipe`] (declarative rules) → [`items`] (one STAC
//! item per dataset version) → [`catalogue`] + [`html`] (the static tree),
//! written atomically by [`output`], with Kerchunk reference files beside
//! the items ([`sidecars`], over [`kerchunk`]). [`build`] sequences them; [`sample`]
//! writes a synthetic archive for demos and benchmarks.
//!
//! Federation: [`harvest`] mirrors a partner's static catalogue (outside the
//! site), [`merge`] holds the rules by which `build` merges the mirrored
//! items in, and [`diff`] compares what two sites answer.

pub mod build;
pub mod cache;
pub mod catalogue;
pub mod config;
pub mod diff;
pub mod harvest;
pub mod html;
pub mod items;
pub mod kerchunk;
pub mod merge;
pub mod output;
pub mod publish;
pub mod read;
pub mod recipe;
pub mod sample;
pub mod scan;
pub mod search_index;
pub mod sidecars;
pub mod spill;
