//! The S3 host's serving loop: the direct RPC and the AWS SDK's REST
//! protocol on two ports, one model.

use std::net::Ipv4Addr;

use turmoil::net::UdpSocket;

use super::http::HttpFrame;
use super::rpc;
use super::s3_rest;
use super::store::{apply, S3Request};
use super::{SharedS3, S3_HTTP_PORT, S3_PORT};

/// Serve `model` on [`S3_PORT`] (the direct RPC) and [`S3_HTTP_PORT`] (the
/// AWS SDK's REST protocol) of the current host until the host stops.
/// Use as a host's software: `sim.host("s3", move || serve_s3(model.clone()))`.
pub async fn serve_s3(model: SharedS3) -> turmoil::Result {
    let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, S3_PORT)).await?;
    let http = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, S3_HTTP_PORT)).await?;
    loop {
        tokio::select! {
            biased;
            got = rpc::recv_frame::<S3Request>(&socket) => {
                let (frame, from) = got?;
                let reply = apply(&mut model.borrow_mut(), frame.body);
                rpc::reply(&socket, from, frame.id, &reply);
            }
            got = rpc::recv_frame::<HttpFrame>(&http) => {
                let (frame, from) = got?;
                let reply = match s3_rest::decode(frame.body) {
                    Ok((request, op)) => s3_rest::encode(&op, apply(&mut model.borrow_mut(), request)),
                    Err(answer) => answer,
                };
                rpc::reply(&http, from, frame.id, &reply);
            }
        }
    }
}
