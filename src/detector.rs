//! A detector actor: one ONNX Runtime session, fed one frame at a time by the pool.
//!
//! Inference runs on tokio's blocking pool so a detector never stalls the runtime's workers
//! (Redis I/O, the other actors). The session and its buffers move into the blocking task and
//! back; if the task panics they are gone, the actor fails, and the pool restarts it.

use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::OwnedSemaphorePermit;

use crate::model::{ModelOptions, Yolo};
use crate::pool::PoolMsg;
use crate::protocol::{now_us, DetectionsMessage, ErrorMessage, Frame, GapReason};
use crate::sequencer::{Outcome, SequencerMsg};

/// A frame on its way through the pool.
#[derive(Debug)]
pub struct Job {
    pub stream: Arc<str>,
    pub frame: Frame,
    /// Never dropped for lateness.
    pub keep: bool,
    /// Held while the frame is inside the node; bounds kept frames (back-pressure on the source).
    pub permit: Option<OwnedSemaphorePermit>,
}

pub enum DetectorMsg {
    Detect(Job),
    /// Test hook for supervision: panic while holding the next frame, as a crashing
    /// inference would. Only reachable in-process, never from the network.
    PanicOnNextFrame,
}

pub struct DetectorArgs {
    pub slot: usize,
    pub model: Arc<ModelOptions>,
    pub pool: ActorRef<PoolMsg>,
    pub sequencer: ActorRef<SequencerMsg>,
}

pub struct DetectorState {
    args: DetectorArgs,
    /// `None` only while a frame is being processed on the blocking pool.
    yolo: Option<Box<Yolo>>,
    panic_on_next: bool,
}

pub struct Detector;

impl Actor for Detector {
    type Msg = DetectorMsg;
    type State = DetectorState;
    type Arguments = DetectorArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: DetectorArgs,
    ) -> Result<DetectorState, ActorProcessingErr> {
        let opts = args.model.clone();
        let yolo = tokio::task::spawn_blocking(move || Yolo::load(&opts)).await??;
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
        let job = match msg {
            DetectorMsg::Detect(job) => job,
            DetectorMsg::PanicOnNextFrame => {
                state.panic_on_next = true;
                return Ok(());
            }
        };
        let mut yolo = state.yolo.take().ok_or("detector lost its model")?;
        let jpeg = job.frame.jpeg.clone(); // shares the buffer
        let panic_now = std::mem::take(&mut state.panic_on_next);
        let (yolo, result) = tokio::task::spawn_blocking(move || {
            if panic_now {
                panic!("injected detector fault");
            }
            let result = yolo.detect_jpeg(&jpeg);
            (yolo, result)
        })
        .await
        .map_err(|e| format!("inference task died: {e}"))?;
        let model = yolo.info().name.clone();
        state.yolo = Some(yolo);

        let (stream, seq) = (job.stream.clone(), job.frame.seq);
        let outcome = match result {
            Ok(found) => Outcome::Detected(DetectionsMessage {
                stream: stream.to_string(),
                seq,
                capture_ts_us: job.frame.capture_ts_us,
                done_ts_us: now_us(),
                model,
                width: found.width,
                height: found.height,
                detections: found.detections,
            }),
            Err(e) => {
                let error = ErrorMessage::new(&stream, Some(seq), e.code(), e.to_string());
                let _ = state.args.sequencer.cast(SequencerMsg::Error {
                    channel_stream: stream.as_bytes().to_vec(),
                    error,
                });
                Outcome::Gap {
                    reason: GapReason::Failed,
                    detail: Some(e.to_string()),
                }
            }
        };
        let _ = state.args.sequencer.cast(SequencerMsg::Completed {
            stream: stream.clone(),
            seq,
            outcome,
        });
        let _ = state.args.pool.cast(PoolMsg::Done {
            slot: state.args.slot,
            stream,
            seq,
        });
        Ok(())
    }
}
