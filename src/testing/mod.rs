//! Fakes of the plugin's effects (delegate execution, netns operations), for the
//! in-process tests only: they are not part of the shipped library.

mod exec;
mod netns;

pub use exec::{FakeAnswer, FakeCall as ExecCall, FakeExec};
pub use netns::{FakeCall as NetnsCall, FakeNetns};
