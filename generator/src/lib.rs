//! fedstac: static, federated STAC catalogues for CMIP6 archives.
//!
//! Data flows through one module per stage, each with a narrow public face:
//! [`scan`] (walk roots, match recipes) → [`read`] (netCDF headers, checksums,
//! with the [`cache`]) → [`recipe`] (declarative rules) → [`items`] (one STAC
//! item per dataset version) → [`catalogue`] + [`html`] (the static tree),
//! written atomically by [`output`]. [`build`] sequences them; [`sample`]
//! writes a synthetic archive for demos and benchmarks.

pub mod build;
pub mod cache;
pub mod catalogue;
pub mod config;
pub mod html;
pub mod items;
pub mod kerchunk;
pub mod output;
pub mod read;
pub mod recipe;
pub mod sample;
pub mod scan;
