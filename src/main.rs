//! The `duckhour` binary: parse arguments, run, exit with the library's code.

use clap::Parser;

fn main() {
    let cli = duckhour::cli::Cli::parse();
    std::process::exit(duckhour::run(cli));
}
