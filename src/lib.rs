//! sibi (四必): the gate checkpoint daemon of a residential compound.
//!
//! Bird's-eye view: **sources → presentation → policy → actuation + record → sync**. Devices (camera, thermometer,
//! buttons, the operator's console) produce events; the pure [`checkpoint`] gathers the events of one presentation and
//! asks the pure [`policy`] for a [`policy::Decision`]; the [`app`] driver turns the decision into a durable record in
//! the [`store`] first and a gate command second.
//!
//! Codemap (see ARCHITECTURE.md for the invariants):
//! - [`domain`]: the vocabulary (tier, category, code status, temperature, verdict) and masking helpers;
//! - [`policy`]: `decide(policy, presentation, now)`, the rule table, the bounds a local config may not cross;
//! - [`dryrun`]: the `sibi decide` contract;
//! - [`config`]: raw TOML → validated [`config::Config`];
//! - [`checkpoint`]: the pure session state machine (events in, effects out);
//! - [`hw`]: device-role traits and their backends;
//! - [`store`]: SQLite, migrations, durable entries;
//! - [`app`]: wiring, tasks and the shutdown order.

pub mod app;
pub mod bundle;
pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod console;
pub mod credential;
pub mod domain;
pub mod dryrun;
pub mod hw;
pub mod keys;
pub mod mask;
pub mod office;
pub mod policy;
pub mod privacy;
pub mod probe;
pub mod report;
pub mod store;
pub mod sync;
pub mod systemd;
pub mod table;
