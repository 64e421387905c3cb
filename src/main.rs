//! The `flow-store` binary. All the work is in the library; this file only
//! hands over to the command line parser.

use std::process::ExitCode;

fn main() -> ExitCode {
    flow_store::cli::main()
}
