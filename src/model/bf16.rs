//! Keeping a bf16 run close to the fp32 one: the convolutions that read the input image get
//! their weights split in two bf16-exact halves.
//!
//! Measured on the trained YOLOv3-tiny (BENCHMARKS.md, "Real detections"): nearly all of what
//! bf16 changes in the scores comes from rounding the *first* convolution's weights to bf16's
//! 8-bit mantissa. Batch normalisation folded into that convolution gives it large weights whose
//! products cancel against its bias, so a weight's rounding error (2^-9 of it) is large against
//! the output. Rounding that layer's weights alone moves scores by 0.0075 on average; every other
//! layer by 0.001 or less.
//!
//! So, for the bf16 path only, each such convolution `Conv(x, W, b)` becomes
//! `Conv(Concat(x, x), [W_hi, W_lo], b)`, that is `W_hi * x + W_lo * x + b` in one convolution,
//! where `W_hi` is `W` rounded to bf16 and `W_lo = W - W_hi`: in bf16 the two halves together
//! carry `W` to 2^-17 of it (one half alone, to 2^-9), and the products accumulate in fp32 as
//! before. The layer reads 6 channels instead of 3 and writes the same output: about 3% more
//! inference time on YOLOv3-tiny, against 11% for two convolutions and a sum.
//! In fp32 the rewritten graph computes the same function (checked in `tests/trained_model.rs`).
//!
//! The rewrite works on the serialized ONNX file (the protobuf wire format, as
//! [`super::onnx_graph`] reads it): untouched fields are copied byte for byte.

use super::onnx_graph::{raw_fields, Value};
use super::onnx_graph::{OnnxError, FLOAT};

/// The model with its input convolutions split, or `None` when it has none to split (no Conv
/// reads a graph input with float32 weights in the file, or their weights are bf16 already).
pub fn split_input_convolutions(model: &[u8]) -> Result<Option<Vec<u8>>, OnnxError> {
    let mut graph = None;
    for field in raw_fields(model) {
        if let (7, Value::Bytes(g), _) = field? {
            graph = Some(g);
        }
    }
    let graph = graph.ok_or_else(|| OnnxError("it has no graph".into()))?;
    let Some(new_graph) = split_in_graph(graph)? else {
        return Ok(None);
    };
    let mut out = Vec::with_capacity(model.len() + new_graph.len() - graph.len() + 16);
    for field in raw_fields(model) {
        match field? {
            (7, _, _) => put_bytes(&mut out, 7, &new_graph),
            (_, _, raw) => out.extend_from_slice(raw),
        }
    }
    Ok(Some(out))
}

/// A graph's node: its raw bytes and what the rewrite needs of it.
struct NodeInfo<'a> {
    raw: &'a [u8],
    inputs: Vec<&'a [u8]>,
    outputs: Vec<&'a [u8]>,
    op_type: &'a [u8],
    /// Its `group` attribute (1 when absent).
    group: i64,
}

fn split_in_graph(graph: &[u8]) -> Result<Option<Vec<u8>>, OnnxError> {
    let mut input_names: Vec<&[u8]> = Vec::new();
    let mut initializers: Vec<(&[u8], &[u8])> = Vec::new(); // (name, raw TensorProto)
    for field in raw_fields(graph) {
        match field? {
            (11, Value::Bytes(vi), _) => {
                for f in raw_fields(vi) {
                    if let (1, Value::Bytes(name), _) = f? {
                        input_names.push(name);
                    }
                }
            }
            (5, Value::Bytes(t), _) => initializers.push((tensor_name(t)?, t)),
            _ => {}
        }
    }
    // Inputs that are fed, not initializers listed among the inputs (older exports).
    input_names.retain(|n| !initializers.iter().any(|(i, _)| i == n));
    let mut replaced: Vec<(&[u8], Vec<u8>)> = Vec::new(); // node raw -> its replacement fields
    let mut new_initializers = Vec::new();
    for field in raw_fields(graph) {
        let (1, Value::Bytes(node), raw) = field? else {
            continue;
        };
        let node = node_info(node, raw)?;
        // A grouped convolution's channels cannot be doubled this way.
        if node.op_type != b"Conv"
            || node.inputs.len() < 2
            || node.outputs.len() != 1
            || node.group != 1
        {
            continue;
        }
        if !input_names.contains(&node.inputs[0]) {
            continue;
        }
        let Some((_, weights)) = initializers.iter().find(|(n, _)| *n == node.inputs[1]) else {
            continue;
        };
        let Some((dims, w)) = float_tensor(weights)? else {
            continue;
        };
        let hi: Vec<f32> = w.iter().map(|&v| round_to_bf16(v)).collect();
        let lo: Vec<f32> = w.iter().zip(&hi).map(|(&v, &h)| v - h).collect();
        if lo.iter().all(|&v| v == 0.0) {
            continue; // bf16-exact already
        }
        // [out, in, kh, kw] -> [out, 2 in, kh, kw]: each output's hi kernels, then its lo ones.
        let per_output = w.len() / dims[0] as usize;
        let mut both = Vec::with_capacity(2 * w.len());
        for (h, l) in hi.chunks(per_output).zip(lo.chunks(per_output)) {
            both.extend_from_slice(h);
            both.extend_from_slice(l);
        }
        let both_dims = [dims[0], 2 * dims[1], dims[2], dims[3]];
        let name = |suffix: &str| {
            let mut n = node.outputs[0].to_vec();
            n.extend_from_slice(suffix.as_bytes());
            n
        };
        let (twice, weights_name) = (name("__kadr_bf16_input_twice"), name("__kadr_bf16_w"));
        new_initializers.push(float_tensor_bytes(&weights_name, &both_dims, &both));
        let mut fields = Vec::new();
        // Concat(x, x) -> twice; Conv(twice, [W_hi, W_lo], b) -> y.
        let mut concat = Vec::new();
        put_bytes(&mut concat, 1, node.inputs[0]);
        put_bytes(&mut concat, 1, node.inputs[0]);
        put_bytes(&mut concat, 2, &twice);
        put_bytes(&mut concat, 3, &name("__kadr_bf16_concat"));
        put_bytes(&mut concat, 4, b"Concat");
        let mut axis = Vec::new();
        put_bytes(&mut axis, 1, b"axis");
        put_varint_field(&mut axis, 3, 1); // i = 1
        put_varint_field(&mut axis, 20, 2); // type = INT
        put_bytes(&mut concat, 5, &axis);
        put_bytes(&mut fields, 1, &concat);
        let mut conv_inputs: Vec<&[u8]> = node.inputs.clone();
        conv_inputs[0] = &twice;
        conv_inputs[1] = &weights_name;
        put_bytes(
            &mut fields,
            1,
            &copy_node(&node, &conv_inputs, node.outputs[0])?,
        );
        replaced.push((node.raw, fields));
    }
    if replaced.is_empty() {
        return Ok(None);
    }
    let mut out =
        Vec::with_capacity(graph.len() + new_initializers.iter().map(Vec::len).sum::<usize>() * 2);
    for field in raw_fields(graph) {
        let (_, _, raw) = field?;
        match replaced.iter().find(|(r, _)| std::ptr::eq(*r, raw)) {
            Some((_, fields)) => out.extend_from_slice(fields),
            None => out.extend_from_slice(raw),
        }
    }
    for t in &new_initializers {
        put_bytes(&mut out, 5, t);
    }
    Ok(Some(out))
}

fn node_info<'a>(node: &'a [u8], raw: &'a [u8]) -> Result<NodeInfo<'a>, OnnxError> {
    let mut info = NodeInfo {
        raw,
        inputs: Vec::new(),
        outputs: Vec::new(),
        op_type: b"",
        group: 1,
    };
    for f in raw_fields(node) {
        match f? {
            (1, Value::Bytes(b), _) => info.inputs.push(b),
            (2, Value::Bytes(b), _) => info.outputs.push(b),
            (4, Value::Bytes(b), _) => info.op_type = b,
            (5, Value::Bytes(attr), _) => {
                // AttributeProto: name = 1, i = 3
                let (mut name, mut i) = (&b""[..], None);
                for f in raw_fields(attr) {
                    match f? {
                        (1, Value::Bytes(b), _) => name = b,
                        (3, Value::Varint(v), _) => i = Some(v as i64),
                        _ => {}
                    }
                }
                if name == b"group" {
                    info.group = i.unwrap_or(1);
                }
            }
            _ => {}
        }
    }
    Ok(info)
}

/// The node with other inputs and its output; its name, operator, attributes and domain copied
/// as they are.
fn copy_node(node: &NodeInfo, inputs: &[&[u8]], output: &[u8]) -> Result<Vec<u8>, OnnxError> {
    let (_, Value::Bytes(body), _) = raw_fields(node.raw)
        .next()
        .ok_or_else(|| OnnxError("empty node".into()))??
    else {
        return Err(OnnxError("a node is not a message".into()));
    };
    let mut out = Vec::new();
    for i in inputs {
        put_bytes(&mut out, 1, i);
    }
    put_bytes(&mut out, 2, output);
    for f in raw_fields(body) {
        match f? {
            (1 | 2, _, _) => {}
            (_, _, raw) => out.extend_from_slice(raw),
        }
    }
    Ok(out)
}

fn tensor_name(t: &[u8]) -> Result<&[u8], OnnxError> {
    for f in raw_fields(t) {
        if let (8, Value::Bytes(name), _) = f? {
            return Ok(name);
        }
    }
    Ok(b"")
}

/// A float32 tensor's dims and values, or `None` for another type (or data kept outside).
/// A float tensor's dimensions and values.
type FloatTensor = (Vec<i64>, Vec<f32>);

fn float_tensor(t: &[u8]) -> Result<Option<FloatTensor>, OnnxError> {
    let (mut dims, mut data_type, mut values) = (Vec::new(), 0, Vec::new());
    for f in raw_fields(t) {
        match f? {
            (1, Value::Varint(d), _) => dims.push(d as i64),
            (1, Value::Bytes(packed), _) => {
                for d in super::onnx_graph::varints(packed) {
                    dims.push(d? as i64);
                }
            }
            (2, Value::Varint(v), _) => data_type = v as i32,
            (4, Value::Fixed32(v), _) => values.push(f32::from_bits(v)),
            (4, Value::Bytes(packed), _) | (9, Value::Bytes(packed), _) => values.extend(
                packed
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            ),
            (14, _, _) => return Ok(None), // external data
            _ => {}
        }
    }
    let count: i64 = dims.iter().product();
    if data_type != FLOAT || dims.len() != 4 || count as usize != values.len() {
        return Ok(None);
    }
    Ok(Some((dims, values)))
}

fn float_tensor_bytes(name: &[u8], dims: &[i64], values: &[f32]) -> Vec<u8> {
    let mut t = Vec::new();
    for &d in dims {
        put_varint_field(&mut t, 1, d as u64);
    }
    put_varint_field(&mut t, 2, FLOAT as u64);
    put_bytes(&mut t, 8, name);
    let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    put_bytes(&mut t, 9, &raw);
    t
}

/// `v` rounded to the nearest bfloat16 (ties to even), as a float32: what the CPU's bf16
/// conversion (`vcvtneps2bf16`) gives.
pub fn round_to_bf16(v: f32) -> f32 {
    if !v.is_finite() {
        return v;
    }
    let bits = v.to_bits();
    let rounded = bits.wrapping_add(0x7fff + ((bits >> 16) & 1)) & 0xffff_0000;
    f32::from_bits(rounded)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn put_varint_field(out: &mut Vec<u8>, number: u32, v: u64) {
    put_varint(out, u64::from(number) << 3);
    put_varint(out, v);
}

fn put_bytes(out: &mut Vec<u8>, number: u32, payload: &[u8]) {
    put_varint(out, (u64::from(number) << 3) | 2);
    put_varint(out, payload.len() as u64);
    out.extend_from_slice(payload);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::onnx_graph::GraphSummary;

    #[test]
    fn bf16_rounding_is_to_nearest_even() {
        assert_eq!(round_to_bf16(1.0), 1.0);
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties go to the even one, 1.
        assert_eq!(round_to_bf16(1.0 + 1.0 / 256.0), 1.0);
        assert_eq!(round_to_bf16(1.0 + 3.0 / 256.0), 1.0 + 4.0 / 256.0);
        // -0.1 rounds to bf16 0xBDCD, which is -0.10009765625.
        assert_eq!(round_to_bf16(-0.1).to_bits(), 0xBDCD_0000);
        let v = 0.123_456_79_f32;
        assert!((round_to_bf16(v) - v).abs() <= v * 2f32.powi(-9));
    }

    /// A model: input x [1,3,4,4] -> Conv(W 2x3x1x1, b) -> y, built with the same writer.
    fn tiny_model(weights: &[f32]) -> Vec<u8> {
        let mut graph = Vec::new();
        let mut node = Vec::new();
        for i in [&b"x"[..], b"W", b"b"] {
            put_bytes(&mut node, 1, i);
        }
        put_bytes(&mut node, 2, b"y");
        put_bytes(&mut node, 3, b"conv");
        put_bytes(&mut node, 4, b"Conv");
        let mut attr = Vec::new();
        put_bytes(&mut attr, 1, b"kernel_shape");
        put_varint_field(&mut attr, 8, 1);
        put_bytes(&mut node, 5, &attr);
        put_bytes(&mut graph, 1, &node);
        put_bytes(
            &mut graph,
            5,
            &float_tensor_bytes(b"W", &[2, 3, 1, 1], weights),
        );
        let mut vi = Vec::new();
        put_bytes(&mut vi, 1, b"x");
        put_bytes(&mut graph, 11, &vi);
        let mut vi = Vec::new();
        put_bytes(&mut vi, 1, b"y");
        put_bytes(&mut graph, 12, &vi);
        let mut model = Vec::new();
        put_varint_field(&mut model, 1, 8);
        put_bytes(&mut model, 7, &graph);
        let mut kv = Vec::new();
        put_bytes(&mut kv, 1, b"names");
        put_bytes(&mut kv, 2, b"{0: 'a'}");
        put_bytes(&mut model, 14, &kv);
        model
    }

    #[test]
    fn the_input_convolution_reads_the_input_twice_through_two_exact_halves() {
        let w = [0.1, -3.3, 12.345, 7.0, 0.001, -0.5];
        let out = split_input_convolutions(&tiny_model(&w)).unwrap().unwrap();
        let s = GraphSummary::parse(&out).unwrap();
        assert_eq!(
            s.op_types.iter().map(String::as_str).collect::<Vec<_>>(),
            ["Concat", "Conv"]
        );
        assert_eq!(s.metadata["names"], "{0: 'a'}", "other fields copied");
        assert_eq!(
            (s.inputs[0].name.as_str(), s.outputs[0].name.as_str()),
            ("x", "y")
        );
        let mut graph = None;
        for f in raw_fields(&out) {
            if let (7, Value::Bytes(g), _) = f.unwrap() {
                graph = Some(g);
            }
        }
        let (mut tensors, mut nodes) = (Vec::new(), Vec::new());
        for f in raw_fields(graph.unwrap()) {
            match f.unwrap() {
                (5, Value::Bytes(t), _) => tensors.push(float_tensor(t).unwrap().unwrap()),
                (1, Value::Bytes(n), raw) => {
                    let n = node_info(n, raw).unwrap();
                    nodes.push((
                        String::from_utf8_lossy(n.op_type).into_owned(),
                        n.inputs.len(),
                    ));
                }
                _ => {}
            }
        }
        assert_eq!(
            nodes,
            [("Concat".to_string(), 2), ("Conv".to_string(), 3)],
            "the bias kept"
        );
        let (dims, both) = &tensors[1];
        assert_eq!(dims, &[2, 6, 1, 1]);
        for out_ch in 0..2 {
            for i in 0..3 {
                let (hi, lo) = (both[out_ch * 6 + i], both[out_ch * 6 + 3 + i]);
                let v = w[out_ch * 3 + i];
                assert_eq!(round_to_bf16(hi), hi);
                assert_eq!(hi + lo, v);
                // What bf16 makes of the two halves together is within 2^-17 of the weight.
                let in_bf16 = hi + round_to_bf16(lo);
                assert!((in_bf16 - v).abs() <= v.abs() * 2f32.powi(-17), "{v}");
            }
        }
    }

    #[test]
    fn nothing_to_split_is_none_and_junk_is_an_error() {
        let exact = [1.0, -2.0, 0.5, 4.0, 0.25, -8.0];
        assert!(split_input_convolutions(&tiny_model(&exact))
            .unwrap()
            .is_none());
        let m = tiny_model(&[0.1; 6]);
        assert!(split_input_convolutions(&m[..m.len() / 2]).is_err());
    }
}
