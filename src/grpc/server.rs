//! tonic service implementations: each RPC opens a span named after it (with the ids it carries), calls
//! the matching `CriService` method and maps errors through `status::to_status`.

use std::pin::Pin;
use std::sync::Arc;

use k8s_cri::v1::image_service_server::ImageService;
use k8s_cri::v1::runtime_service_server::RuntimeService;
use k8s_cri::v1::*;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use super::status::to_status;
use crate::cri::{CriError, CriService};

#[derive(Clone)]
pub struct CriServer {
    cri: Arc<CriService>,
}

impl CriServer {
    pub fn new(cri: Arc<CriService>) -> CriServer {
        CriServer { cri }
    }
}

fn reply<T>(result: Result<T, CriError>) -> Result<Response<T>, Status> {
    match result {
        Ok(v) => Ok(Response::new(v)),
        Err(e) => {
            let status = to_status(&e);
            tracing::warn!(code = ?status.code(), error = %e, "request failed");
            Err(status)
        }
    }
}

fn image_name(spec: Option<&ImageSpec>) -> &str {
    spec.map(|s| s.image.as_str()).unwrap_or("")
}

/// RPCs a later milestone implements: a span, and an Unimplemented status naming the missing feature.
macro_rules! later {
    ($($method:ident($req:ty) -> $resp:ty = $rpc:literal, $feature:literal;)*) => {$(
        // Written in async_trait's expanded form: the attribute cannot see inside a macro invocation.
        fn $method<'life0, 'async_trait>(
            &'life0 self,
            _request: Request<$req>,
        ) -> Pin<Box<dyn std::future::Future<Output = Result<Response<$resp>, Status>> + Send + 'async_trait>>
        where
            'life0: 'async_trait,
            Self: 'async_trait,
        {
            let span = tracing::info_span!($rpc);
            Box::pin(async { reply::<$resp>(Err(CriService::unimplemented($rpc, $feature))) }.instrument(span))
        }
    )*};
}

#[tonic::async_trait]
impl RuntimeService for CriServer {
    async fn version(&self, request: Request<VersionRequest>) -> Result<Response<VersionResponse>, Status> {
        let _span = tracing::debug_span!("Version").entered();
        Ok(Response::new(self.cri.version(request.into_inner())))
    }

    async fn status(&self, request: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        let span = tracing::debug_span!("Status");
        Ok(Response::new(self.cri.status(request.into_inner()).instrument(span).await))
    }

    async fn update_runtime_config(&self, request: Request<UpdateRuntimeConfigRequest>) -> Result<Response<UpdateRuntimeConfigResponse>, Status> {
        let span = tracing::info_span!("UpdateRuntimeConfig");
        reply(self.cri.update_runtime_config(request.into_inner()).instrument(span).await)
    }

    async fn runtime_config(&self, request: Request<RuntimeConfigRequest>) -> Result<Response<RuntimeConfigResponse>, Status> {
        let _span = tracing::debug_span!("RuntimeConfig").entered();
        Ok(Response::new(self.cri.runtime_config(request.into_inner())))
    }

    async fn run_pod_sandbox(&self, request: Request<RunPodSandboxRequest>) -> Result<Response<RunPodSandboxResponse>, Status> {
        let req = request.into_inner();
        let meta = req.config.as_ref().and_then(|c| c.metadata.as_ref());
        let span = tracing::info_span!(
            "RunPodSandbox",
            pod = meta.map(|m| m.name.as_str()).unwrap_or(""),
            namespace = meta.map(|m| m.namespace.as_str()).unwrap_or(""),
            runtime_handler = req.runtime_handler.as_str()
        );
        reply(self.cri.run_pod_sandbox(req).instrument(span).await)
    }

    async fn stop_pod_sandbox(&self, request: Request<StopPodSandboxRequest>) -> Result<Response<StopPodSandboxResponse>, Status> {
        let req = request.into_inner();
        let span = tracing::info_span!("StopPodSandbox", pod_sandbox_id = req.pod_sandbox_id.as_str());
        reply(self.cri.stop_pod_sandbox(req).instrument(span).await)
    }

    async fn remove_pod_sandbox(&self, request: Request<RemovePodSandboxRequest>) -> Result<Response<RemovePodSandboxResponse>, Status> {
        let req = request.into_inner();
        let span = tracing::info_span!("RemovePodSandbox", pod_sandbox_id = req.pod_sandbox_id.as_str());
        reply(self.cri.remove_pod_sandbox(req).instrument(span).await)
    }

    async fn pod_sandbox_status(&self, request: Request<PodSandboxStatusRequest>) -> Result<Response<PodSandboxStatusResponse>, Status> {
        let req = request.into_inner();
        let _span = tracing::debug_span!("PodSandboxStatus", pod_sandbox_id = req.pod_sandbox_id.as_str()).entered();
        reply(self.cri.pod_sandbox_status(req))
    }

    async fn list_pod_sandbox(&self, request: Request<ListPodSandboxRequest>) -> Result<Response<ListPodSandboxResponse>, Status> {
        let _span = tracing::debug_span!("ListPodSandbox").entered();
        reply(self.cri.list_pod_sandbox(request.into_inner()))
    }

    async fn create_container(&self, request: Request<CreateContainerRequest>) -> Result<Response<CreateContainerResponse>, Status> {
        let req = request.into_inner();
        let name = req.config.as_ref().and_then(|c| c.metadata.as_ref()).map(|m| m.name.clone()).unwrap_or_default();
        let span = tracing::info_span!("CreateContainer", pod_sandbox_id = req.pod_sandbox_id.as_str(), container = name.as_str());
        reply(self.cri.create_container(req).instrument(span).await)
    }

    async fn start_container(&self, request: Request<StartContainerRequest>) -> Result<Response<StartContainerResponse>, Status> {
        let req = request.into_inner();
        let span = tracing::info_span!("StartContainer", container_id = req.container_id.as_str());
        reply(self.cri.start_container(req).instrument(span).await)
    }

    async fn stop_container(&self, request: Request<StopContainerRequest>) -> Result<Response<StopContainerResponse>, Status> {
        let req = request.into_inner();
        let span = tracing::info_span!("StopContainer", container_id = req.container_id.as_str(), timeout = req.timeout);
        reply(self.cri.stop_container(req).instrument(span).await)
    }

    async fn remove_container(&self, request: Request<RemoveContainerRequest>) -> Result<Response<RemoveContainerResponse>, Status> {
        let req = request.into_inner();
        let span = tracing::info_span!("RemoveContainer", container_id = req.container_id.as_str());
        reply(self.cri.remove_container(req).instrument(span).await)
    }

    async fn list_containers(&self, request: Request<ListContainersRequest>) -> Result<Response<ListContainersResponse>, Status> {
        let span = tracing::debug_span!("ListContainers");
        reply(self.cri.list_containers(request.into_inner()).instrument(span).await)
    }

    async fn container_status(&self, request: Request<ContainerStatusRequest>) -> Result<Response<ContainerStatusResponse>, Status> {
        let req = request.into_inner();
        let span = tracing::debug_span!("ContainerStatus", container_id = req.container_id.as_str());
        reply(self.cri.container_status(req).instrument(span).await)
    }

    async fn exec_sync(&self, request: Request<ExecSyncRequest>) -> Result<Response<ExecSyncResponse>, Status> {
        let req = request.into_inner();
        let span = tracing::info_span!("ExecSync", container_id = req.container_id.as_str());
        reply(self.cri.exec_sync(req).instrument(span).await)
    }

    async fn reopen_container_log(&self, request: Request<ReopenContainerLogRequest>) -> Result<Response<ReopenContainerLogResponse>, Status> {
        let req = request.into_inner();
        let span = tracing::info_span!("ReopenContainerLog", container_id = req.container_id.as_str());
        reply(self.cri.reopen_container_log(req).instrument(span).await)
    }

    async fn exec(&self, request: Request<ExecRequest>) -> Result<Response<ExecResponse>, Status> {
        let req = request.into_inner();
        let span = tracing::info_span!("Exec", container_id = req.container_id.as_str(), tty = req.tty, stdin = req.stdin);
        reply(self.cri.exec(req).instrument(span).await)
    }

    async fn attach(&self, request: Request<AttachRequest>) -> Result<Response<AttachResponse>, Status> {
        let req = request.into_inner();
        let span = tracing::info_span!("Attach", container_id = req.container_id.as_str(), tty = req.tty, stdin = req.stdin);
        reply(self.cri.attach(req).instrument(span).await)
    }

    async fn port_forward(&self, request: Request<PortForwardRequest>) -> Result<Response<PortForwardResponse>, Status> {
        let req = request.into_inner();
        let span = tracing::info_span!("PortForward", pod_sandbox_id = req.pod_sandbox_id.as_str());
        reply(self.cri.port_forward(req).instrument(span).await)
    }

    type GetContainerEventsStream = Pin<Box<dyn futures::Stream<Item = Result<ContainerEventResponse, Status>> + Send + 'static>>;

    async fn get_container_events(&self, _request: Request<GetEventsRequest>) -> Result<Response<Self::GetContainerEventsStream>, Status> {
        let _span = tracing::info_span!("GetContainerEvents").entered();
        reply(Err(CriService::unimplemented("GetContainerEvents", "container lifecycle events")))
    }

    async fn update_container_resources(&self, request: Request<UpdateContainerResourcesRequest>) -> Result<Response<UpdateContainerResourcesResponse>, Status> {
        let req = request.into_inner();
        let span = tracing::info_span!("UpdateContainerResources", container_id = req.container_id.as_str());
        reply(self.cri.update_container_resources(req).instrument(span).await)
    }

    async fn container_stats(&self, request: Request<ContainerStatsRequest>) -> Result<Response<ContainerStatsResponse>, Status> {
        let req = request.into_inner();
        let span = tracing::debug_span!("ContainerStats", container_id = req.container_id.as_str());
        reply(self.cri.container_stats(req).instrument(span).await)
    }

    async fn list_container_stats(&self, request: Request<ListContainerStatsRequest>) -> Result<Response<ListContainerStatsResponse>, Status> {
        let span = tracing::debug_span!("ListContainerStats");
        reply(self.cri.list_container_stats(request.into_inner()).instrument(span).await)
    }

    async fn pod_sandbox_stats(&self, request: Request<PodSandboxStatsRequest>) -> Result<Response<PodSandboxStatsResponse>, Status> {
        let req = request.into_inner();
        let span = tracing::debug_span!("PodSandboxStats", pod_sandbox_id = req.pod_sandbox_id.as_str());
        reply(self.cri.pod_sandbox_stats(req).instrument(span).await)
    }

    async fn list_pod_sandbox_stats(&self, request: Request<ListPodSandboxStatsRequest>) -> Result<Response<ListPodSandboxStatsResponse>, Status> {
        let span = tracing::debug_span!("ListPodSandboxStats");
        reply(self.cri.list_pod_sandbox_stats(request.into_inner()).instrument(span).await)
    }

    async fn list_metric_descriptors(&self, request: Request<ListMetricDescriptorsRequest>) -> Result<Response<ListMetricDescriptorsResponse>, Status> {
        let _span = tracing::debug_span!("ListMetricDescriptors").entered();
        Ok(Response::new(self.cri.list_metric_descriptors(request.into_inner())))
    }

    async fn list_pod_sandbox_metrics(&self, request: Request<ListPodSandboxMetricsRequest>) -> Result<Response<ListPodSandboxMetricsResponse>, Status> {
        let span = tracing::debug_span!("ListPodSandboxMetrics");
        reply(self.cri.list_pod_sandbox_metrics(request.into_inner()).instrument(span).await)
    }

    later! {
        checkpoint_container(CheckpointContainerRequest) -> CheckpointContainerResponse = "CheckpointContainer", "container checkpointing";
    }
}

#[tonic::async_trait]
impl ImageService for CriServer {
    async fn list_images(&self, request: Request<ListImagesRequest>) -> Result<Response<ListImagesResponse>, Status> {
        let _span = tracing::debug_span!("ListImages").entered();
        reply(self.cri.list_images(request.into_inner()))
    }

    async fn image_status(&self, request: Request<ImageStatusRequest>) -> Result<Response<ImageStatusResponse>, Status> {
        let req = request.into_inner();
        let _span = tracing::debug_span!("ImageStatus", image = image_name(req.image.as_ref())).entered();
        reply(self.cri.image_status(req))
    }

    async fn pull_image(&self, request: Request<PullImageRequest>) -> Result<Response<PullImageResponse>, Status> {
        let req = request.into_inner();
        let span = tracing::info_span!("PullImage", image = image_name(req.image.as_ref()));
        reply(self.cri.pull_image(req).instrument(span).await)
    }

    async fn remove_image(&self, request: Request<RemoveImageRequest>) -> Result<Response<RemoveImageResponse>, Status> {
        let req = request.into_inner();
        let span = tracing::info_span!("RemoveImage", image = image_name(req.image.as_ref()));
        reply(self.cri.remove_image(req).instrument(span).await)
    }

    async fn image_fs_info(&self, request: Request<ImageFsInfoRequest>) -> Result<Response<ImageFsInfoResponse>, Status> {
        let span = tracing::debug_span!("ImageFsInfo");
        reply(self.cri.image_fs_info(request.into_inner()).instrument(span).await)
    }
}
