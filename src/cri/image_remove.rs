//! RemoveImage.

use k8s_cri::v1::{RemoveImageRequest, RemoveImageResponse};

use super::{required_image, CriError, CriService};

impl CriService {
    pub async fn remove_image(&self, req: RemoveImageRequest) -> Result<RemoveImageResponse, CriError> {
        let name = required_image(req.image.as_ref(), "image.image")?;
        // api.proto: "This call is idempotent, and must not return an error if the image has already been
        // removed." A name that is not even a valid reference is still bad input.
        let removed = self.images.remove(&name).await?;
        if !removed {
            tracing::debug!(image = %name, "RemoveImage: nothing to remove");
        }
        Ok(RemoveImageResponse {})
    }
}
