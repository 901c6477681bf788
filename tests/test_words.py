"""Word knowledge: publisher names in a question, by words and by acronym."""

import pytest

from rag.words import acronym_of, names_publisher


@pytest.mark.parametrize(
    "question, source, named",
    [
        ("What did Reuters report about the talks?", "Reuters", True),
        ("What did AFP report?", "Agence France-Presse", True),  # acronym -> long form
        ("According to Agence France-Presse, who spoke?", "AFP", True),  # long form -> acronym
        ("According to PTI, who met?", "Press Trust of India", True),  # "of" is no initial
        ("Who did the Prime Minister meet?", "Press Trust of India", False),
        ("What did The Verge say?", "TechCrunch", False),
        ("What did the Coastal Commission decide?", "Capital Courier", False),  # two long forms
        ("What did the ministry say?", None, False),
        ("What did usatoday report?", "www.usatoday.com", True),
    ],
)
def test_a_question_names_its_publisher(question, source, named):
    assert names_publisher(question, source) is named


def test_acronyms_need_two_capitalised_words():
    assert acronym_of("Agence France-Presse") == "AFP"
    assert acronym_of("Reuters") == ""
    assert acronym_of("the daily news") == ""


@pytest.mark.parametrize("question, parts", [
    ("Who chaired the 2019 inquiry, and who chairs the 2024 one?",
     ["Who chaired the 2019 inquiry", "who chairs the 2024 one"]),
    ("Which club signed him and how much did it pay?", ["Which club signed him", "how much did it pay"]),
    ("How many homes flooded in 2021 and in 2023?", ["How many homes flooded in 2021", "in 2023"]),
    ("What was the mayor's stance in 2020 compared with 2022?", ["What was the mayor's stance in 2020", "2022"]),
    ("What did the council and the union agree?", ["What did the council and the union agree?"]),  # joins words
    ("Who won?", ["Who won?"]),
])
def test_a_question_that_asks_two_things_splits_into_its_asks(question, parts):
    from rag.words import question_parts

    assert question_parts(question) == parts
