//! PullImage: fetch an image and return its id.

use k8s_cri::v1::{PullImageRequest, PullImageResponse};

use super::{required_image, CriError, CriService};
use crate::image::registry::Credentials;

impl CriService {
    pub async fn pull_image(&self, req: PullImageRequest) -> Result<PullImageResponse, CriError> {
        let image = required_image(req.image.as_ref(), "image.image")?;
        let credentials = req
            .auth
            .map(|a| Credentials {
                username: a.username,
                password: a.password,
                auth: a.auth,
                identity_token: a.identity_token,
                registry_token: a.registry_token,
            })
            .unwrap_or_default();
        // api.proto: image_ref is "the image reference or id"; like containerd we answer the image id
        // (config digest), which is stable across tags.
        let image_ref = self.images.pull(&image, &credentials).await?;
        Ok(PullImageResponse { image_ref })
    }
}
