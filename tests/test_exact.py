"""Exact-answer scoring: what counts as the same answer, per-field accuracy, and the aggregate score."""

import pytest

from tuneforge.evals.exact import Score, answers_match, field_accuracy, normalize, reference_answer, score

REF = '{"customer_name": "Priya Raman", "order_id": "A-48213", "product": "Lumen Desk Lamp", "issue": "damaged"}'


# normalize


def test_normalize_strips_surrounding_whitespace():
    assert normalize("  PAY-OPS \n\t") == "PAY-OPS"


def test_normalize_removes_json_code_fence():
    assert normalize('```json\n{"a": 1}\n```') == '{"a": 1}'


def test_normalize_removes_bare_code_fence_and_whitespace_around_it():
    assert normalize('\n  ```\n{"a": 1}\n```  \n') == '{"a": 1}'


def test_normalize_removes_one_line_fence():
    assert normalize("```PAY-OPS```") == "PAY-OPS"


def test_normalize_keeps_inner_whitespace():
    assert normalize(" a   b\n c ") == "a   b\n c"


def test_normalize_leaves_text_that_merely_contains_a_fence():
    assert normalize('Here you go: ```json\n{"a": 1}\n```') == 'Here you go: ```json\n{"a": 1}\n```'


# answers_match


def test_plain_labels_match_exactly_after_stripping():
    assert answers_match(" PAY-OPS\n", "PAY-OPS") is True


def test_plain_labels_are_case_sensitive():
    assert answers_match("pay-ops", "PAY-OPS") is False


def test_json_key_order_does_not_matter():
    pred = '{"issue": "damaged", "product": "Lumen Desk Lamp", "order_id": "A-48213", "customer_name": "Priya Raman"}'
    assert answers_match(pred, REF) is True


def test_json_whitespace_does_not_matter():
    pred = '{"customer_name":"Priya Raman","order_id":"A-48213",\n "product":"Lumen Desk Lamp","issue":"damaged"}'
    assert answers_match(pred, REF) is True


def test_json_in_code_fence_matches():
    assert answers_match(f"```json\n{REF}\n```", REF) is True


def test_json_with_one_wrong_value_does_not_match():
    assert answers_match(REF.replace("damaged", "billing"), REF) is False


def test_json_with_extra_key_does_not_match():
    assert answers_match('{"a": 1, "b": 2}', '{"a": 1}') is False


def test_json_values_compare_by_value_not_spelling():
    assert answers_match('{"n": 1.0}', '{"n": 1}') is True
    assert answers_match('{"s": "\\u00e9"}', '{"s": "é"}') is True


def test_json_true_is_not_one():
    assert answers_match('{"x": true}', '{"x": 1}') is False


def test_json_list_order_matters():
    assert answers_match("[1, 2]", "[2, 1]") is False


def test_invalid_json_prediction_does_not_match_json_reference():
    assert answers_match('{"customer_name": "Priya Raman", "order_id": ', REF) is False


def test_prose_prediction_does_not_match_json_reference():
    assert answers_match("The customer is Priya Raman.", REF) is False


def test_quoted_label_is_not_the_bare_label():
    assert answers_match('"PAY-OPS"', "PAY-OPS") is False


# field_accuracy


def test_field_accuracy_all_right_in_any_order():
    pred = '{"issue": "damaged", "product": "Lumen Desk Lamp", "order_id": "A-48213", "customer_name": "Priya Raman"}'
    assert field_accuracy(pred, REF) == 1.0


def test_field_accuracy_counts_each_field():
    pred = '{"customer_name": "Priya Raman", "order_id": "A48213", "product": "Lumen Desk Lamp", "issue": "other"}'
    assert field_accuracy(pred, REF) == 0.5


def test_field_accuracy_missing_keys_are_wrong_extra_keys_ignored():
    pred = '{"customer_name": "Priya Raman", "extra": 1}'
    assert field_accuracy(pred, REF) == 0.25


def test_field_accuracy_unparsable_prediction_is_zero():
    assert field_accuracy("{not json", REF) == 0.0


def test_field_accuracy_non_object_prediction_is_zero():
    assert field_accuracy('["Priya Raman"]', REF) == 0.0


def test_field_accuracy_reads_fenced_prediction():
    assert field_accuracy(f"```json\n{REF}\n```", REF) == 1.0


def test_field_accuracy_is_none_for_plain_reference():
    assert field_accuracy("PAY-OPS", "PAY-OPS") is None


def test_field_accuracy_is_none_for_non_object_json_reference():
    assert field_accuracy("[1, 2]", "[1, 2]") is None


# score


def test_score_mixes_exact_match_and_field_accuracy():
    other = '{"customer_name": "Li Wei", "order_id": "B-10000", "product": "Quill Fountain Pen", "issue": "billing"}'
    predictions = [
        REF,  # right: 4/4
        '{"customer_name": "Li Wei", "order_id": "B-10000", "product": "Quill Fountain Pen", "issue": "other"}',  # 3/4
        "sorry, I can't help",  # 0/4
    ]
    result = score(predictions, [REF, other, REF])
    assert result == Score(n=3, exact_match=1 / 3, field_accuracy=(1.0 + 0.75 + 0.0) / 3)


def test_score_labels_have_no_field_accuracy():
    result = score(
        ["PAY-OPS", "RETURNS ", "TECH-L2", "```\nSHIP-LOG\n```"], ["PAY-OPS", "RETURNS", "SHIP-LOG", "SHIP-LOG"]
    )
    assert result == Score(n=4, exact_match=0.75, field_accuracy=None)


def test_score_field_accuracy_averages_only_rows_where_defined():
    result = score([REF, "PAY-OPS"], [REF, "RETURNS"])
    assert result == Score(n=2, exact_match=0.5, field_accuracy=1.0)


def test_score_empty():
    assert score([], []) == Score(n=0, exact_match=0.0, field_accuracy=None)


def test_score_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="2 predictions, 3 references"):
        score(["a", "b"], ["a", "b", "c"])


# reference_answer


def _row(*messages):
    return {"messages": [{"role": role, "content": content} for role, content in messages]}


def test_reference_answer_is_the_assistant_content():
    row = _row(("system", "Route it."), ("user", "My card was charged twice."), ("assistant", "PAY-OPS"))
    assert reference_answer(row) == "PAY-OPS"


def test_reference_answer_takes_the_last_assistant_message():
    row = _row(("user", "q1"), ("assistant", "first"), ("user", "q2"), ("assistant", "second"))
    assert reference_answer(row) == "second"


def test_reference_answer_is_not_stripped():
    assert reference_answer(_row(("user", "q"), ("assistant", " spaced \n"))) == " spaced \n"


def test_reference_answer_joins_text_content_parts():
    row = {
        "messages": [
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": [{"type": "text", "text": "PAY"}, {"type": "text", "text": "-OPS"}]},
        ]
    }
    assert reference_answer(row) == "PAY-OPS"


def test_reference_answer_without_assistant_raises():
    with pytest.raises(ValueError, match="no assistant message"):
        reference_answer(_row(("system", "s"), ("user", "q")))


def test_reference_answer_without_messages_raises():
    with pytest.raises(ValueError, match="no assistant message"):
        reference_answer({"prompt": "q", "completion": "a"})


def test_reference_answer_without_text_content_raises():
    with pytest.raises(ValueError, match="no text content"):
        reference_answer({"messages": [{"role": "assistant", "content": None}]})
