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
