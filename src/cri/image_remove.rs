//! RemoveImage.

use k8s_cri::v1::{RemoveImageRequest, RemoveImageResponse};

use super::{required_image, CriError, CriService};

impl CriService {
    pub async fn remove_image(&self, req: RemoveImageRequest) -> Result<RemoveImageResponse, CriError> {
        let name = required_image(req.image.as_ref(), "image.image")?;
        // api.proto: "This call is idempotent, and must not return an error if the image has already been
        // removed." A name that is not even a valid reference is still bad input.
        // An image a container still uses keeps its layers (they are the container's overlay lowers):
        // untagging it is fine, deleting it is refused, as CRI-O does. kubelet's image GC only
        // removes unused images.
        let containers = self.store.containers()?;
        let user_of = |image_id: &str| containers.iter().find(|c| c.image_id == image_id).map(|c| c.id.clone());
        let removed = self.images.remove(&name, &user_of).await?;
        if !removed {
            tracing::debug!(image = %name, "RemoveImage: nothing to remove");
        }
        Ok(RemoveImageResponse {})
    }
}
