//! Pure domain types: object ids and names, and the sandbox and container state machines.
//! No I/O, no proto transport, no knowledge of LXC — everything here is unit-testable data.

pub mod container;
pub mod ids;
pub mod sandbox;
