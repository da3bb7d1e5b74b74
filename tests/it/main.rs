//! One integration-test binary (as ripgrep does): the command-line contracts, the config checks, the daemon's real
//! run path with simulated devices, its shutdown, and a crash test.

mod browser;
mod camera_fault;
mod camera_path;
mod check_config;
mod code_cli;
mod console;
mod crash;
mod dcc_vectors;
mod decide_cli;
mod decode;
mod health_code;
mod idcard;
mod mask;
mod office_enroll;
mod office_levels;
mod office_lists;
mod packaging;
mod pass_cli;
#[path = "../support/pg.rs"]
mod pg;
mod postgres_office;
mod privacy;
mod report;
mod run_path;
mod sync_office;
mod systemd;
mod thermometer;
mod util;
