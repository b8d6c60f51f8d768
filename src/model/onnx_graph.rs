//! What an ONNX file says about itself, read before ONNX Runtime sees it: inputs and outputs
//! with their element types and shapes, the metadata (`names`, `imgsz`, ...), the operators it
//! uses, and the thresholds of a `NonMaxSuppression` inside the graph.
//!
//! A minimal reader of the protobuf wire format for the few fields of `onnx.proto` this needs
//! (no code generation, no dependency). Everything is bounds-checked: a truncated or hostile file
//! is an error, never a panic.

use std::collections::{BTreeMap, BTreeSet, HashMap};

/// ONNX `TensorProto.DataType` values kadr names in its messages.
pub const FLOAT: i32 = 1;
pub const INT64: i32 = 7;
pub const FLOAT16: i32 = 10;

/// A graph input or output: name, element type and shape (`None` for a dynamic dimension).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ValueInfo {
    pub name: String,
    pub elem_type: i32,
    pub shape: Vec<Option<i64>>,
}

impl ValueInfo {
    pub fn shape_text(&self) -> String {
        let dims: Vec<String> = self
            .shape
            .iter()
            .map(|d| d.map_or("?".into(), |v| v.to_string()))
            .collect();
        format!("[{}]", dims.join(","))
    }
}

/// The thresholds of an ONNX `NonMaxSuppression` node, where they are constants of the file.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct NmsThresholds {
    pub max_per_class: Option<i64>,
    pub iou: Option<f32>,
    pub score: Option<f32>,
}

/// What kadr reads of a model file.
#[derive(Debug, Clone, Default)]
pub struct GraphSummary {
    pub inputs: Vec<ValueInfo>,
    pub outputs: Vec<ValueInfo>,
    pub metadata: BTreeMap<String, String>,
    pub op_types: BTreeSet<String>,
    pub nms: Option<NmsThresholds>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("not a readable ONNX file: {0}")]
pub struct OnnxError(pub String);

impl GraphSummary {
    /// Read the summary of a serialized `ModelProto`.
    pub fn parse(bytes: &[u8]) -> Result<Self, OnnxError> {
        let mut summary = GraphSummary::default();
        let mut graph = None;
        for field in Fields::new(bytes) {
            let (number, value) = field?;
            match (number, value) {
                (7, Value::Bytes(g)) => graph = Some(g),
                (14, Value::Bytes(entry)) => {
                    let (mut key, mut val) = (String::new(), String::new());
                    for f in Fields::new(entry) {
                        match f? {
                            (1, Value::Bytes(b)) => key = text(b)?,
                            (2, Value::Bytes(b)) => val = text(b)?,
                            _ => {}
                        }
                    }
                    summary.metadata.insert(key, val);
                }
                _ => {}
            }
        }
        let graph = graph.ok_or_else(|| OnnxError("it has no graph".into()))?;
        let mut initializers = HashMap::new();
        let mut constants = HashMap::new();
        let mut nms_inputs = None;
        let mut input_infos = Vec::new();
        for field in Fields::new(graph) {
            match field? {
                (1, Value::Bytes(node)) => {
                    let node = Node::parse(node)?;
                    if node.op_type == "Constant" {
                        if let (Some(out), Some(t)) = (node.outputs.first(), node.value) {
                            constants.insert(out.clone(), t);
                        }
                    } else if node.op_type == "NonMaxSuppression" {
                        nms_inputs = Some(node.inputs.clone());
                    }
                    summary.op_types.insert(node.op_type);
                }
                (5, Value::Bytes(t)) => {
                    let t = Tensor::parse(t)?;
                    initializers.insert(t.name.clone(), t);
                }
                (11, Value::Bytes(v)) => input_infos.push(value_info(v)?),
                (12, Value::Bytes(v)) => summary.outputs.push(value_info(v)?),
                _ => {}
            }
        }
        // Older exports list initializers among the inputs: those are not fed.
        summary.inputs = input_infos
            .into_iter()
            .filter(|i| !initializers.contains_key(&i.name))
            .collect();
        if let Some(inputs) = nms_inputs {
            let constant = |i: usize| {
                inputs
                    .get(i)
                    .and_then(|n| initializers.get(n).or_else(|| constants.get(n)))
            };
            summary.nms = Some(NmsThresholds {
                max_per_class: constant(2).and_then(Tensor::first_i64),
                iou: constant(3).and_then(Tensor::first_f32),
                score: constant(4).and_then(Tensor::first_f32),
            });
        }
        Ok(summary)
    }
}

fn text(b: &[u8]) -> Result<String, OnnxError> {
    String::from_utf8(b.to_vec()).map_err(|_| OnnxError("a name is not UTF-8".into()))
}

/// `ValueInfoProto` -> name, tensor element type, shape.
fn value_info(bytes: &[u8]) -> Result<ValueInfo, OnnxError> {
    let mut info = ValueInfo::default();
    for f in Fields::new(bytes) {
        match f? {
            (1, Value::Bytes(b)) => info.name = text(b)?,
            (2, Value::Bytes(type_proto)) => {
                for f in Fields::new(type_proto) {
                    // TypeProto.tensor_type = 1
                    if let (1, Value::Bytes(tensor)) = f? {
                        for f in Fields::new(tensor) {
                            match f? {
                                (1, Value::Varint(t)) => info.elem_type = t as i32,
                                (2, Value::Bytes(shape)) => {
                                    for f in Fields::new(shape) {
                                        if let (1, Value::Bytes(dim)) = f? {
                                            let mut value = None;
                                            for f in Fields::new(dim) {
                                                if let (1, Value::Varint(v)) = f? {
                                                    value = Some(v as i64);
                                                }
                                            }
                                            info.shape.push(value.filter(|v| *v > 0));
                                        }
                                    }
                                }
                                _ => {}
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }
    Ok(info)
}

struct Node {
    inputs: Vec<String>,
    outputs: Vec<String>,
    op_type: String,
    /// A `Constant` node's `value`.
    value: Option<Tensor>,
}

impl Node {
    fn parse(bytes: &[u8]) -> Result<Node, OnnxError> {
        let mut node = Node {
            inputs: Vec::new(),
            outputs: Vec::new(),
            op_type: String::new(),
            value: None,
        };
        for f in Fields::new(bytes) {
            match f? {
                (1, Value::Bytes(b)) => node.inputs.push(text(b)?),
                (2, Value::Bytes(b)) => node.outputs.push(text(b)?),
                (4, Value::Bytes(b)) => node.op_type = text(b)?,
                (5, Value::Bytes(attr)) => {
                    // AttributeProto: name = 1, t = 5
                    let (mut name, mut tensor) = (String::new(), None);
                    for f in Fields::new(attr) {
                        match f? {
                            (1, Value::Bytes(b)) => name = text(b)?,
                            (5, Value::Bytes(t)) => tensor = Some(Tensor::parse(t)?),
                            _ => {}
                        }
                    }
                    if name == "value" {
                        node.value = tensor;
                    }
                }
                _ => {}
            }
        }
        Ok(node)
    }
}

/// The first value of a small constant tensor (a threshold, a count).
#[derive(Debug, Clone, Default)]
struct Tensor {
    name: String,
    data_type: i32,
    floats: Vec<f32>,
    int64s: Vec<i64>,
    raw: Vec<u8>,
}

impl Tensor {
    fn parse(bytes: &[u8]) -> Result<Tensor, OnnxError> {
        let mut t = Tensor::default();
        for f in Fields::new(bytes) {
            match f? {
                (2, Value::Varint(v)) => t.data_type = v as i32,
                (4, Value::Fixed32(v)) => t.floats.push(f32::from_bits(v)),
                // Packed floats: only a small tensor's (a threshold), not the weights.
                (4, Value::Bytes(packed)) if packed.len() <= 64 => {
                    t.floats.extend(
                        packed
                            .chunks_exact(4)
                            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
                    );
                }
                (7, Value::Varint(v)) => t.int64s.push(v as i64),
                (7, Value::Bytes(packed)) => {
                    for f in Varints(packed) {
                        t.int64s.push(f? as i64);
                    }
                }
                (8, Value::Bytes(b)) => t.name = text(b)?,
                // Only small tensors are kept whole: weights are skipped, not copied.
                (9, Value::Bytes(raw)) if raw.len() <= 64 => t.raw = raw.to_vec(),
                _ => {}
            }
        }
        Ok(t)
    }

    fn first_f32(&self) -> Option<f32> {
        match self.data_type {
            FLOAT => self.floats.first().copied().or_else(|| {
                self.raw
                    .get(..4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            }),
            _ => None,
        }
    }

    fn first_i64(&self) -> Option<i64> {
        match self.data_type {
            INT64 => self.int64s.first().copied().or_else(|| {
                self.raw
                    .get(..8)
                    .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
            }),
            _ => None,
        }
    }
}

/// One field's payload in the protobuf wire format.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Value<'a> {
    Varint(u64),
    /// Skipped: no field kadr reads is a fixed64.
    Fixed64,
    Bytes(&'a [u8]),
    Fixed32(u32),
}

/// The fields of one message, in order.
struct Fields<'a> {
    rest: &'a [u8],
    failed: bool,
}

impl<'a> Fields<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self {
            rest: bytes,
            failed: false,
        }
    }

    fn next_field(&mut self) -> Result<(u32, Value<'a>), OnnxError> {
        let key = read_varint(&mut self.rest)?;
        let number = (key >> 3) as u32;
        let value = match key & 7 {
            0 => Value::Varint(read_varint(&mut self.rest)?),
            1 => {
                take(&mut self.rest, 8)?;
                Value::Fixed64
            }
            2 => {
                let len = read_varint(&mut self.rest)?;
                let len =
                    usize::try_from(len).map_err(|_| OnnxError("a field is too long".into()))?;
                Value::Bytes(take(&mut self.rest, len)?)
            }
            5 => Value::Fixed32(u32::from_le_bytes(
                take(&mut self.rest, 4)?.try_into().expect("4 bytes"),
            )),
            w => return Err(OnnxError(format!("wire type {w} in field {number}"))),
        };
        Ok((number, value))
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u32, Value<'a>), OnnxError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() || self.failed {
            return None;
        }
        let field = self.next_field();
        self.failed = field.is_err();
        Some(field)
    }
}

/// The fields of one message with each field's own bytes (key and payload), for a rewrite that
/// copies what it does not change ([`super::bf16`]).
pub(crate) fn raw_fields(
    bytes: &[u8],
) -> impl Iterator<Item = Result<(u32, Value<'_>, &[u8]), OnnxError>> {
    let mut fields = Fields::new(bytes);
    std::iter::from_fn(move || {
        if fields.rest.is_empty() || fields.failed {
            return None;
        }
        let before = fields.rest;
        let field = fields.next_field();
        fields.failed = field.is_err();
        Some(field.map(|(n, v)| (n, v, &before[..before.len() - fields.rest.len()])))
    })
}

/// Packed varints.
pub(crate) fn varints(packed: &[u8]) -> impl Iterator<Item = Result<u64, OnnxError>> + '_ {
    Varints(packed)
}

/// Packed varints.
struct Varints<'a>(&'a [u8]);

impl Iterator for Varints<'_> {
    type Item = Result<u64, OnnxError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.0.is_empty() {
            return None;
        }
        let v = read_varint(&mut self.0);
        if v.is_err() {
            self.0 = &[];
        }
        Some(v)
    }
}

fn take<'a>(rest: &mut &'a [u8], n: usize) -> Result<&'a [u8], OnnxError> {
    if rest.len() < n {
        return Err(OnnxError(
            "the file ends inside a field (truncated?)".into(),
        ));
    }
    let (head, tail) = rest.split_at(n);
    *rest = tail;
    Ok(head)
}

fn read_varint(rest: &mut &[u8]) -> Result<u64, OnnxError> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, tail) = rest
            .split_first()
            .ok_or_else(|| OnnxError("the file ends inside a number (truncated?)".into()))?;
        *rest = tail;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(OnnxError("a number is longer than 64 bits".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    // A tiny encoder, for building test messages.
    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }
    fn bytes_field(n: u32, payload: &[u8], out: &mut Vec<u8>) {
        varint(((n as u64) << 3) | 2, out);
        varint(payload.len() as u64, out);
        out.extend_from_slice(payload);
    }
    fn varint_field(n: u32, v: u64, out: &mut Vec<u8>) {
        varint((n as u64) << 3, out);
        varint(v, out);
    }
    fn value_info_bytes(name: &str, elem: i32, dims: &[i64]) -> Vec<u8> {
        let mut shape = Vec::new();
        for &d in dims {
            let mut dim = Vec::new();
            if d > 0 {
                varint_field(1, d as u64, &mut dim);
            } else {
                bytes_field(2, b"N", &mut dim);
            }
            bytes_field(1, &dim, &mut shape);
        }
        let mut tensor = Vec::new();
        varint_field(1, elem as u64, &mut tensor);
        bytes_field(2, &shape, &mut tensor);
        let mut ty = Vec::new();
        bytes_field(1, &tensor, &mut ty);
        let mut vi = Vec::new();
        bytes_field(1, name.as_bytes(), &mut vi);
        bytes_field(2, &ty, &mut vi);
        vi
    }

    fn model() -> Vec<u8> {
        let mut graph = Vec::new();
        // node: NonMaxSuppression(boxes, scores, max, iou, score)
        let mut node = Vec::new();
        for i in ["boxes", "scores", "max", "iou", "score"] {
            bytes_field(1, i.as_bytes(), &mut node);
        }
        bytes_field(2, b"sel", &mut node);
        bytes_field(4, b"NonMaxSuppression", &mut node);
        bytes_field(1, &node, &mut graph);
        let mut t = Vec::new();
        varint_field(2, FLOAT as u64, &mut t);
        bytes_field(8, b"iou", &mut t);
        bytes_field(9, &0.65f32.to_le_bytes(), &mut t);
        bytes_field(5, &t, &mut graph);
        let mut t = Vec::new();
        varint_field(2, INT64 as u64, &mut t);
        varint_field(7, 100, &mut t);
        bytes_field(8, b"max", &mut t);
        bytes_field(5, &t, &mut graph);
        bytes_field(
            11,
            &value_info_bytes("images", FLOAT, &[1, 3, 384, 640]),
            &mut graph,
        );
        bytes_field(12, &value_info_bytes("output", FLOAT, &[-1, 7]), &mut graph);
        let mut m = Vec::new();
        varint_field(1, 8, &mut m);
        bytes_field(7, &graph, &mut m);
        let mut kv = Vec::new();
        bytes_field(1, b"names", &mut kv);
        bytes_field(2, b"{0: 'car'}", &mut kv);
        bytes_field(14, &kv, &mut m);
        m
    }

    #[test]
    fn reads_inputs_outputs_metadata_ops_and_nms_thresholds() {
        let s = GraphSummary::parse(&model()).unwrap();
        assert_eq!(s.inputs.len(), 1);
        assert_eq!(s.inputs[0].name, "images");
        assert_eq!(
            s.inputs[0].shape,
            vec![Some(1), Some(3), Some(384), Some(640)]
        );
        assert_eq!(s.outputs[0].shape, vec![None, Some(7)]);
        assert_eq!(s.outputs[0].shape_text(), "[?,7]");
        assert_eq!(s.metadata["names"], "{0: 'car'}");
        assert!(s.op_types.contains("NonMaxSuppression"));
        let nms = s.nms.unwrap();
        assert_eq!(nms.iou, Some(0.65));
        assert_eq!(nms.max_per_class, Some(100));
        assert_eq!(nms.score, None);
    }

    #[test]
    fn a_truncated_or_junk_file_is_an_error_not_a_panic() {
        let m = model();
        for cut in [1, 7, m.len() / 2, m.len() - 1] {
            assert!(GraphSummary::parse(&m[..cut]).is_err(), "cut at {cut}");
        }
        assert!(GraphSummary::parse(b"").is_err());
        assert!(GraphSummary::parse(b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff").is_err());
        assert!(GraphSummary::parse(b"not an onnx file at all").is_err());
    }
}
