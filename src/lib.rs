//! cri-lxc: a Kubernetes CRI server whose containers are LXC containers.
//!
//! Dependencies point one way: grpc → cri → {image, store, …} → model. `daemon` is the composition root.
#![deny(unsafe_code)]

pub mod config;
pub mod cri;
pub mod daemon;
pub mod grpc;
pub mod image;
pub mod keyed_mutex;
pub mod model;
pub mod network;
pub mod runtime;
pub mod store;
pub mod streaming;
