"""The inference image's codecs, on the host: Accept negotiation, request decoding and
response encoding of the default handlers (`smrl_serving.codecs`, numpy only)."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from smrl_serving import codecs
from smrl_serving.codecs import decode, encode, media_type, negotiate
from smrl_serving.errors import BadRequest, NotAcceptable, UnsupportedMediaType

JSON, CSV, NPY = "application/json", "text/csv", "application/x-npy"
OFFERED = (JSON, CSV, NPY)


def _npy(array, allow_pickle: bool = False) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array), allow_pickle=allow_pickle)
    return buffer.getvalue()


def _load_npy(body: bytes) -> np.ndarray:
    return np.load(io.BytesIO(body), allow_pickle=False)


# -- media types ---------------------------------------------------------------------------

@pytest.mark.parametrize("header, media", [
    ("application/json", JSON),
    ("Application/JSON; charset=utf-8", JSON),
    ("  text/csv ;header=present", CSV),
    ("", ""),
    (None, ""),
])
def test_media_type_drops_parameters_and_case(header, media):
    assert media_type(header) == media


def test_the_codecs_decode_and_encode_json_csv_and_npy():
    assert codecs.DECODABLE == OFFERED
    assert codecs.ENCODABLE == OFFERED


# -- Accept negotiation --------------------------------------------------------------------

@pytest.mark.parametrize("accept", [None, "", "   ", "*/*", "*", "*/*;q=0.8"])
def test_no_accept_header_or_any_type_gives_the_default(accept):
    assert negotiate(accept, OFFERED, CSV) == CSV


@pytest.mark.parametrize("accept", [JSON, CSV, NPY])
def test_an_offered_type_is_chosen(accept):
    assert negotiate(accept, OFFERED, JSON) == accept


def test_accept_is_case_insensitive_and_ignores_other_parameters():
    assert negotiate("TEXT/CSV; charset=utf-8", OFFERED, JSON) == CSV


def test_the_highest_quality_wins():
    assert negotiate("application/json;q=0.5, text/csv", OFFERED, NPY) == CSV
    assert negotiate("text/csv;q=0.2, application/x-npy;Q=0.9", OFFERED, JSON) == NPY


def test_equal_qualities_keep_the_clients_order():
    assert negotiate("application/x-npy, text/csv", OFFERED, JSON) == NPY
    assert negotiate("text/csv;q=0.5, application/x-npy;q=0.5", OFFERED, JSON) == CSV


def test_unoffered_types_are_skipped_for_an_offered_one():
    assert negotiate("image/png, text/csv;q=0.1", OFFERED, JSON) == CSV


def test_a_wildcard_after_unoffered_types_gives_the_default():
    assert negotiate("image/png, */*;q=0.1", OFFERED, NPY) == NPY


def test_a_subtype_wildcard_prefers_the_default_then_the_first_offered_match():
    assert negotiate("application/*", OFFERED, JSON) == JSON
    assert negotiate("application/*", OFFERED, CSV) == JSON
    assert negotiate("text/*", OFFERED, JSON) == CSV


def test_quality_zero_refuses_a_type():
    with pytest.raises(NotAcceptable):
        negotiate("text/csv;q=0", OFFERED, JSON)
    assert negotiate("text/csv;q=0, application/json;q=0.1", OFFERED, NPY) == JSON


def test_an_unreadable_quality_counts_as_zero():
    assert negotiate("text/csv;q=high, application/x-npy;q=0.1", OFFERED, JSON) == NPY


def test_empty_items_in_accept_are_ignored():
    assert negotiate(" , text/csv,", OFFERED, JSON) == CSV


def test_nothing_acceptable_is_a_406_that_names_what_the_model_answers_in():
    with pytest.raises(NotAcceptable) as failure:
        negotiate("image/png, text/*", (JSON, NPY), JSON)
    assert str(failure.value) == (
        "Cannot produce Accept 'image/png, text/*': this model answers in application/json, application/x-npy."
    )
    assert failure.value.status == 406


# -- decoding ------------------------------------------------------------------------------

def test_a_json_list_is_one_observation_as_float32():
    array = decode("[0.1, 0.2, 0.3, 0.4]", JSON)
    assert array.dtype == np.float32
    assert array.shape == (4,)
    np.testing.assert_array_equal(array, np.float32([0.1, 0.2, 0.3, 0.4]))


def test_a_json_list_of_lists_is_a_batch():
    assert decode(b"[[1, 2], [3, 4], [5, 6]]", JSON).shape == (3, 2)


@pytest.mark.parametrize("document", [
    {"instances": [[1, 2], [3, 4]]},
    {"inputs": [[1, 2], [3, 4]]},
    {"inputs": {"observation": [[1, 2], [3, 4]]}},
    {"instances": {"observation": [[1, 2], [3, 4]]}},
])
def test_json_objects_wrap_the_batch_tensorflow_serving_style(document):
    np.testing.assert_array_equal(decode(json.dumps(document), JSON), np.float32([[1, 2], [3, 4]]))


def test_instances_comes_before_inputs():
    np.testing.assert_array_equal(decode('{"inputs": [9], "instances": [1]}', JSON), np.float32([1]))


def test_json_with_parameters_in_the_content_type_decodes():
    assert decode("[1]", "application/json; charset=utf-8").shape == (1,)


def test_several_named_inputs_are_refused():
    with pytest.raises(BadRequest, match='^"inputs" names 2 inputs; this handler takes one.$'):
        decode('{"inputs": {"a": [1], "b": [2]}}', JSON)


def test_a_json_object_without_instances_or_inputs_is_refused():
    with pytest.raises(BadRequest) as failure:
        decode('{"observation": [1, 2]}', JSON)
    assert str(failure.value) == ('JSON object must have an "instances" or "inputs" key '
                                  "(or send a list: one observation, or a list of them).")


def test_invalid_json_is_a_bad_request():
    with pytest.raises(BadRequest, match="^Request body is not valid JSON: "):
        decode("[1, 2", JSON)


def test_bytes_that_are_not_utf8_are_a_bad_request():
    with pytest.raises(BadRequest, match="^Request body is not UTF-8 text: "):
        decode(b"[1, \xff]", JSON)


@pytest.mark.parametrize("body", ["[[1, 2], [3]]", '["a", "b"]', "[[1, 2], 3]"])
def test_json_that_is_not_a_uniform_numeric_array_is_a_bad_request(body):
    with pytest.raises(BadRequest, match="^JSON body is not a numeric array of uniform shape: "):
        decode(body, JSON)


@pytest.mark.parametrize("body", ["[]", "[[]]", '{"instances": []}'])
def test_json_without_values_is_a_bad_request(body):
    with pytest.raises(BadRequest, match=r"^JSON body holds no values\.$"):
        decode(body, JSON)


@pytest.mark.parametrize("body", ["[1, NaN]", "[Infinity]", "[[1], [-Infinity]]", "[1, null]", '{"inputs": null}'])
def test_json_with_nan_infinity_or_null_is_a_bad_request(body):
    with pytest.raises(BadRequest) as failure:
        decode(body, JSON)
    assert str(failure.value) == "JSON body holds NaN or infinite values; observations must be finite."


def test_csv_is_one_observation_per_line():
    array = decode("1,2,3\n4,5,6\n", CSV)
    assert array.dtype == np.float32
    np.testing.assert_array_equal(array, np.float32([[1, 2, 3], [4, 5, 6]]))


def test_one_csv_line_is_a_batch_of_one():
    assert decode(b"0.5,1.5", CSV).shape == (1, 2)


def test_csv_cells_may_hold_spaces_and_blank_lines_are_skipped():
    np.testing.assert_array_equal(decode("\n 1.5, 2 \n\n3,4\n", CSV), np.float32([[1.5, 2], [3, 4]]))


def test_csv_with_only_empty_cells_has_no_rows():
    with pytest.raises(BadRequest, match=r"^CSV body has no rows\.$"):
        decode(",,\n , \n", CSV)


@pytest.mark.parametrize("body", ["a,b\n", "1,2\n3\n", "1,,2\n"])
def test_csv_that_is_not_a_uniform_numeric_table_is_a_bad_request(body):
    with pytest.raises(BadRequest, match="^CSV body is not a numeric array of uniform shape: "):
        decode(body, CSV)


def test_npy_keeps_its_shape_and_becomes_float32():
    sent = np.arange(6, dtype=np.float64).reshape(2, 3)
    array = decode(_npy(sent), NPY)
    assert array.dtype == np.float32
    np.testing.assert_array_equal(array, sent.astype(np.float32))


def test_npy_sent_as_latin1_text_decodes():
    body = _npy(np.float32([1, 2])).decode("latin-1")
    np.testing.assert_array_equal(decode(body, NPY), np.float32([1, 2]))


@pytest.mark.parametrize("body", [b"not npy", _npy(np.float32([1]))[:-2],
                                  _npy(np.array(["x"], dtype=object), allow_pickle=True)],
                         ids=["not-npy", "truncated", "pickled-objects"])
def test_bytes_that_are_not_a_plain_npy_array_are_a_bad_request(body):
    with pytest.raises(BadRequest, match=r"^Request body is not a \.npy array: "):
        decode(body, NPY)


def test_npy_with_nan_is_a_bad_request():
    with pytest.raises(BadRequest, match="^npy body holds NaN or infinite values"):
        decode(_npy(np.float32([1, np.nan])), NPY)


@pytest.mark.parametrize("content_type, shown", [
    ("text/plain", "'text/plain'"), ("", "'(none)'"), (None, "'(none)'"), ("image/png; q=1", "'image/png'"),
])
def test_an_unsupported_content_type_is_a_415_that_lists_the_supported_ones(content_type, shown):
    with pytest.raises(UnsupportedMediaType) as failure:
        decode("[1]", content_type)
    assert str(failure.value) == (
        f"Unsupported Content-Type {shown}: send one of application/json, text/csv, application/x-npy."
    )
    assert failure.value.status == 415


def test_the_content_type_is_checked_before_the_body():
    with pytest.raises(UnsupportedMediaType):
        decode(b"", "text/plain")


@pytest.mark.parametrize("content_type", OFFERED)
@pytest.mark.parametrize("body", [b"", "", "  \n"])
def test_an_empty_body_is_a_bad_request(content_type, body):
    with pytest.raises(BadRequest) as failure:
        decode(body, content_type)
    assert str(failure.value) == "Empty request body: send one observation or a batch of them."
    assert failure.value.status == 400


# -- encoding ------------------------------------------------------------------------------

Q = np.float32([[0.1, 0.2], [0.3, 0.4]])
V = np.float32([[1.5], [2.5]])


def test_json_holds_one_row_of_predictions_per_observation():
    assert json.loads(encode([Q], ["q"], JSON)) == {"predictions": Q.tolist()}


def test_json_with_several_outputs_also_names_each():
    document = json.loads(encode([Q, V], ["q", "v"], JSON))
    assert document == {"predictions": Q.tolist(), "outputs": {"q": Q.tolist(), "v": V.tolist()}}


def test_csv_is_one_line_per_observation_that_round_trips_float32():
    body = encode([Q], ["q"], CSV)
    assert body.decode().splitlines() == [",".join(repr(float(v)) for v in row) for row in Q]
    assert body.decode().splitlines()[0] == "0.10000000149011612,0.20000000298023224"
    np.testing.assert_array_equal(decode(body, CSV), Q)


def test_csv_of_a_flat_output_has_one_value_per_line():
    assert encode([np.float32([1, 2])], ["v"], CSV) == b"1.0\n2.0\n"


def test_csv_of_several_outputs_puts_them_side_by_side():
    assert encode([Q, V], ["q", "v"], CSV).decode().splitlines()[1].split(",")[-1] == "2.5"
    np.testing.assert_array_equal(decode(encode([Q, V], ["q", "v"], CSV), CSV), np.concatenate([Q, V], axis=1))


def test_csv_flattens_each_observations_output():
    rows = np.arange(8, dtype=np.float32).reshape(2, 2, 2)
    assert encode([rows], ["x"], CSV) == b"0.0,1.0,2.0,3.0\n4.0,5.0,6.0,7.0\n"


def test_npy_is_float32_with_the_batch_first():
    array = _load_npy(encode([Q.astype(np.float64)], ["q"], NPY))
    assert array.dtype == np.float32
    np.testing.assert_array_equal(array, Q)


def test_npy_of_several_outputs_is_one_table():
    array = _load_npy(encode([Q, V.reshape(2, 1, 1)], ["q", "v"], NPY))
    np.testing.assert_array_equal(array, np.float32([[0.1, 0.2, 1.5], [0.3, 0.4, 2.5]]))


def test_an_encoded_npy_decodes_back():
    np.testing.assert_array_equal(decode(encode([Q], ["q"], NPY), NPY), Q)


def test_encoding_an_unoffered_type_is_a_406():
    with pytest.raises(NotAcceptable) as failure:
        encode([Q], ["q"], "image/png")
    assert str(failure.value) == (
        "Cannot produce 'image/png': this model answers in application/json, text/csv, application/x-npy."
    )
