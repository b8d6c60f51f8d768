//! A detector actor: one ONNX Runtime session, fed frames by any source's dispatcher in the
//! cluster, local or remote.
//!
//! Each detector joins the cluster-wide `detectors` process group, which is how dispatchers
//! find it. A frame names the node it came from; the result goes back to that node's
//! dispatcher. Inference runs on tokio's blocking pool so a detector never stalls the runtime's
//! workers; the session and its buffers move into the blocking task and back, and if the task
//! panics they are gone, the actor fails, and the local pool restarts it.

use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tracing::warn;

use super::messages::DispatchMsg;
use crate::model::{ModelOptions, Yolo};
use crate::node_stats::Stats;
pub(crate) use crate::pipeline::messages::{DetectResult, DetectorMsg, Finished};
use crate::protocol::{now_us, DetectionsMessage};

pub(crate) struct DetectorArgs {
    pub node: Arc<str>,
    pub scope: String,
    pub model: Arc<ModelOptions>,
    pub stats: Arc<Stats>,
}

pub(crate) struct DetectorState {
    args: DetectorArgs,
    /// `None` only while a frame is being processed on the blocking pool.
    yolo: Option<Box<Yolo>>,
    panic_on_next: bool,
}

pub(crate) struct Detector;

impl Actor for Detector {
    type Msg = DetectorMsg;
    type State = DetectorState;
    type Arguments = DetectorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: DetectorArgs,
    ) -> Result<DetectorState, ActorProcessingErr> {
        let opts = args.model.clone();
        let yolo = tokio::task::spawn_blocking(move || Yolo::load(&opts)).await??;
        // Only now, with a model loaded, may dispatchers see it.
        ractor::pg::join_scoped(
            args.scope.clone(),
            super::DETECTORS.to_string(),
            vec![myself.get_cell()],
        );
        Ok(DetectorState {
            args,
            yolo: Some(Box::new(yolo)),
            panic_on_next: false,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: DetectorMsg,
        state: &mut DetectorState,
    ) -> Result<(), ActorProcessingErr> {
        let request = match msg {
            DetectorMsg::Detect(request) => request,
            DetectorMsg::PanicOnNextFrame => {
                state.panic_on_next = true;
                return Ok(());
            }
            DetectorMsg::Malformed(why) => {
                warn!(%why, "malformed message from a peer ignored");
                state.args.stats.malformed.inc();
                return Ok(());
            }
        };
        let stats = &state.args.stats;
        stats.busy.add(1);
        let mut yolo = state.yolo.take().ok_or("detector lost its model")?;
        let jpeg = request.jpeg.clone(); // shares the buffer
        let panic_now = std::mem::take(&mut state.panic_on_next);
        let joined = tokio::task::spawn_blocking(move || {
            if panic_now {
                panic!("injected detector fault");
            }
            let result = yolo.detect_jpeg(&jpeg);
            (yolo, result)
        })
        .await;
        stats.busy.sub(1);
        let (yolo, result) = joined.map_err(|e| format!("inference task died: {e}"))?;
        let model = yolo.info().name.clone();
        state.yolo = Some(yolo);
        stats.inferences.inc();

        if let Ok(found) = &result {
            stats.objects.add(&found.detections);
        }
        let result = match result {
            Ok(found) => DetectResult::Detected(DetectionsMessage {
                stream: request.stream.to_string(),
                seq: request.seq,
                capture_ts_us: request.capture_ts_us,
                done_ts_us: now_us(),
                model,
                width: found.width,
                height: found.height,
                detections: found.detections,
                queued_ms: None,
                detect_ms: None,
                epoch: 0,
            }),
            Err(e) => DetectResult::Failed {
                code: e.code().to_string(),
                message: e.to_string(),
            },
        };
        let finished = Finished {
            stream: request.stream.to_string(),
            seq: request.seq,
            node: state.args.node.to_string(),
            result,
        };
        match super::dispatcher_of(&state.args.scope, &request.origin) {
            Some(dispatcher) => {
                let _ = dispatcher.cast(DispatchMsg::Finished(finished));
            }
            // Its node left; that dispatcher is gone and so is its stream's order.
            None => {
                warn!(origin = %request.origin, seq = request.seq, "result for a dispatcher that left; dropped")
            }
        }
        Ok(())
    }
}
