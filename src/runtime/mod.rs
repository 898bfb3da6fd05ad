//! Running containers: the `ContainerRuntime` seam the CRI layer drives, and its LXC implementation.
//! Pod namespaces are pinned here too (they are the runtime's business; the network layer only
//! configures the pinned netns).

pub mod namespaces;
