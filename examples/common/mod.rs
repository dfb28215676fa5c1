//! What every example's `main` shares: a failure is one line on stderr and exit code 1.

use std::error::Error;
use std::process::ExitCode;

/// The result of an example's run.
pub type RunResult = Result<(), Box<dyn Error>>;

/// Prints an error as one `error: ...` line and turns the result into an exit code.
pub fn exit_code(result: RunResult) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
