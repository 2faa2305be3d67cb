//! Arrow ↔ Rust slices at the Python boundary, without copying inputs.

use std::borrow::Cow;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Float64Type};
use arrow_array::{Array, ArrayRef, FixedSizeListArray, Float32Array, RecordBatch, StringArray};
use arrow_buffer::{BooleanBuffer, NullBuffer};
use arrow_schema::{DataType, Field, Schema};

use crate::error::{DecodeFailure, Error, Result};

/// Borrow the byte strings of a `binary`, `large_binary` or `binary_view` array
/// (null rows are `None`).
pub fn binary_values(array: &dyn Array) -> Result<Vec<Option<&[u8]>>> {
    Ok(match array.data_type() {
        DataType::Binary => array.as_binary::<i32>().iter().collect(),
        DataType::LargeBinary => array.as_binary::<i64>().iter().collect(),
        DataType::BinaryView => array.as_binary_view().iter().collect(),
        other => {
            return Err(Error::InvalidArgument(format!(
                "images must be an Arrow binary or large_binary array, got {other}"
            )))
        }
    })
}

/// Rows of floats from a list-like column: which rows are valid, their dimension and
/// their values (valid rows only, row-major; borrowed when the column is a
/// `fixed_size_list<float32>` without nulls).
pub struct Rows<'a> {
    pub dim: usize,
    pub valid: Vec<bool>,
    pub values: Cow<'a, [f32]>,
}

fn float_values(values: &ArrayRef, what: &str) -> Result<Cow<'static, [f32]>> {
    if values.null_count() > 0 {
        return Err(Error::InvalidArgument(format!(
            "{what} contain null values inside rows"
        )));
    }
    Ok(match values.data_type() {
        DataType::Float32 => Cow::Owned(values.as_primitive::<Float32Type>().values().to_vec()),
        DataType::Float64 => Cow::Owned(
            values
                .as_primitive::<Float64Type>()
                .values()
                .iter()
                .map(|&v| v as f32)
                .collect(),
        ),
        other => {
            return Err(Error::InvalidArgument(format!(
                "{what} must hold float32 or float64 values, got {other}"
            )))
        }
    })
}

/// Read a `fixed_size_list`, `list` or `large_list` of floats. `expected_dim`, when
/// given, is checked; null rows are reported in `valid` and left out of `values`.
pub fn float_rows<'a>(
    array: &'a dyn Array,
    expected_dim: Option<usize>,
    what: &str,
) -> Result<Rows<'a>> {
    let n = array.len();
    let valid: Vec<bool> = (0..n).map(|i| array.is_valid(i)).collect();
    let check_dim = |dim: usize| -> Result<()> {
        match expected_dim {
            Some(e) if e != dim => Err(Error::InvalidArgument(format!(
                "{what} have {dim} values per row, expected {e}"
            ))),
            _ => Ok(()),
        }
    };
    match array.data_type() {
        DataType::FixedSizeList(_, dim) => {
            let dim = *dim as usize;
            check_dim(dim)?;
            let fsl = array.as_fixed_size_list();
            let values = fsl.values();
            let all_valid = array.null_count() == 0;
            if all_valid && values.data_type() == &DataType::Float32 && values.null_count() == 0 {
                let start = fsl.offset() * dim;
                let slice = &values.as_primitive::<Float32Type>().values()[start..start + n * dim];
                return Ok(Rows {
                    dim,
                    valid,
                    values: Cow::Borrowed(slice),
                });
            }
            let mut out = Vec::with_capacity(n * dim);
            for (i, ok) in valid.iter().enumerate() {
                if *ok {
                    out.extend_from_slice(&float_values(&fsl.value(i), what)?);
                }
            }
            Ok(Rows {
                dim,
                valid,
                values: Cow::Owned(out),
            })
        }
        DataType::List(_) | DataType::LargeList(_) => {
            let row = |i: usize| -> ArrayRef {
                match array.data_type() {
                    DataType::List(_) => array.as_list::<i32>().value(i),
                    _ => array.as_list::<i64>().value(i),
                }
            };
            let mut dim = expected_dim;
            let mut out = Vec::new();
            for (i, ok) in valid.iter().enumerate() {
                if !*ok {
                    continue;
                }
                let r = row(i);
                let d = *dim.get_or_insert(r.len());
                if r.len() != d {
                    return Err(Error::InvalidArgument(format!(
                        "{what}: row {i} has {} values, expected {d}",
                        r.len()
                    )));
                }
                out.extend_from_slice(&float_values(&r, what)?);
            }
            let dim = dim.ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "{what}: every row is null, so the dimension is unknown"
                ))
            })?;
            Ok(Rows {
                dim,
                valid,
                values: Cow::Owned(out),
            })
        }
        other => Err(Error::InvalidArgument(format!(
            "{what} must be a list or fixed_size_list of floats, got {other}"
        ))),
    }
}

/// A `fixed_size_list<float32>[dim]` column from row-major values; rows whose
/// `valid` flag is false are null. `values` holds `valid.len() * dim` floats.
pub fn fixed_size_list(
    values: Vec<f32>,
    dim: usize,
    valid: Option<Vec<bool>>,
) -> Result<FixedSizeListArray> {
    let field = Arc::new(Field::new("item", DataType::Float32, false));
    let nulls = valid
        .filter(|v| v.iter().any(|ok| !ok))
        .map(|v| NullBuffer::new(BooleanBuffer::from(v)));
    FixedSizeListArray::try_new(
        field,
        dim as i32,
        Arc::new(Float32Array::from(values)),
        nulls,
    )
    .map_err(|e| Error::InvalidArgument(format!("could not build the output column: {e}")))
}

/// Scatter compact valid-row values back to a full-length buffer (zeros where null).
pub fn scatter(compact: &[f32], valid: &[bool], dim: usize) -> Vec<f32> {
    let mut out = vec![0f32; valid.len() * dim];
    let mut j = 0;
    for (i, ok) in valid.iter().enumerate() {
        if *ok {
            out[i * dim..(i + 1) * dim].copy_from_slice(&compact[j * dim..(j + 1) * dim]);
            j += 1;
        }
    }
    out
}

/// The `(values, error)` record batch returned by `decode` and `embed`.
pub fn values_and_errors(
    name: &str,
    values: Vec<f32>,
    dim: usize,
    errors: &[Option<DecodeFailure>],
) -> Result<RecordBatch> {
    let valid: Vec<bool> = errors.iter().map(Option::is_none).collect();
    let col = fixed_size_list(values, dim, Some(valid))?;
    let err: StringArray = errors
        .iter()
        .map(|e| e.as_ref().map(ToString::to_string))
        .collect();
    let schema = Schema::new(vec![
        Field::new(name, col.data_type().clone(), true),
        Field::new("error", DataType::Utf8, true),
    ]);
    RecordBatch::try_new(Arc::new(schema), vec![Arc::new(col), Arc::new(err)])
        .map_err(|e| Error::InvalidArgument(format!("could not build the output batch: {e}")))
}
