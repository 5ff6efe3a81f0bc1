//! A raw gRPC client for tests that must send what the real `cairn` never would (hostile input).

use anyhow::Result;
use cairn_proto::pb::cairn_client::CairnClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

pub type Client = CairnClient<InterceptedService<Channel, Auth>>;

/// Adds `authorization: Bearer <token>` to every request.
#[derive(Clone)]
pub struct Auth(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut()
            .insert(cairn_proto::AUTH_HEADER, self.0.clone());
        Ok(req)
    }
}

/// Connects to a cairn-server with a device token.
pub async fn connect(url: &str, token: &str) -> Result<Client> {
    let channel = Channel::from_shared(url.to_owned())?.connect().await?;
    let auth = Auth(format!("Bearer {token}").parse()?);
    Ok(CairnClient::with_interceptor(channel, auth))
}
