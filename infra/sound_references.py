"""Recorded sound effects (tuxpaint-stamps-default) and the AudioSet classes each is named for.

Accepted labels per file: the class the file is named for, the sounds that class makes in the
ontology (Dog: Bark, Howl, ...) and its immediate parent (Dog: Domestic animals, pets). The broad
roots ("Animal", "Music", "Sound effect") are never accepted: a tagger that only says "Animal"
has not recognised a dog. The list was written from the file names, before any tagger ran.
"""
from __future__ import annotations

LIVESTOCK = "Livestock, farm animals, working animals"
# The ontology's broad roots: "top-1 specific" skips these and looks at the first label below.
ROOTS = {"Animal", "Music", "Sound effect", "Vehicle", "Speech"}
BIRDSONG = "Bird vocalization, bird call, bird song"

SOUND_LABELS: dict[str, set[str]] = {
    "animals/mammals/dogs/dog.ogg": {"Dog", "Bark", "Howl", "Growling", "Whimper (dog)",
                                     "Canidae, dogs, wolves", "Domestic animals, pets"},
    "animals/mammals/bovines/cow.ogg": {"Cattle, bovinae", "Moo", LIVESTOCK},
    "animals/mammals/bovines/cow_white.ogg": {"Cattle, bovinae", "Moo", LIVESTOCK},
    "animals/mammals/bovines/bull.ogg": {"Cattle, bovinae", "Moo", LIVESTOCK},
    "animals/birds/rooster.ogg": {"Chicken, rooster", "Crowing, cock-a-doodle-doo", "Fowl",
                                  LIVESTOCK},
    "animals/birds/hen.ogg": {"Chicken, rooster", "Cluck", "Fowl", LIVESTOCK},
    "animals/birds/duck.ogg": {"Duck", "Quack", "Fowl", LIVESTOCK},
    "animals/birds/drake.ogg": {"Duck", "Quack", "Fowl", LIVESTOCK},
    "animals/birds/gander.ogg": {"Goose", "Honk", "Fowl", LIVESTOCK},
    "animals/birds/turkey.ogg": {"Turkey", "Gobble", "Fowl", LIVESTOCK},
    "animals/mammals/bovines/sheep.ogg": {"Sheep", "Bleat", LIVESTOCK},
    "animals/mammals/bovines/sheep_lamb.ogg": {"Sheep", "Bleat", LIVESTOCK},
    "animals/mammals/bovines/goat.ogg": {"Goat", "Bleat", LIVESTOCK},
    "animals/mammals/pig.ogg": {"Pig", "Oink", LIVESTOCK},
    "animals/mammals/equines/horse.ogg": {"Horse", "Neigh, whinny", "Clip-clop", LIVESTOCK},
    "animals/mammals/cats/lion.ogg": {"Roaring cats (lions, tigers)", "Roar", "Wild animals"},
    "animals/mammals/cats/tiger.ogg": {"Roaring cats (lions, tigers)", "Roar", "Wild animals"},
    "seasonal/halloween/blackcat.ogg": {"Cat", "Meow", "Caterwaul", "Purr", "Hiss",
                                        "Domestic animals, pets"},
    "animals/birds/crow.ogg": {"Crow", "Caw", "Bird", BIRDSONG},
    "animals/birds/owl.ogg": {"Owl", "Hoot", "Bird", BIRDSONG},
    "animals/birds/seagull.ogg": {"Bird", BIRDSONG},   # AudioSet has no gull class
    "animals/amphibians/frog.ogg": {"Frog", "Croak", "Wild animals"},
    "animals/insects/bee.ogg": {"Bee, wasp, etc.", "Buzz", "Insect"},
    "animals/insects/hornet.ogg": {"Bee, wasp, etc.", "Buzz", "Insect"},
    "animals/insects/mosquito.ogg": {"Mosquito", "Buzz", "Insect"},
    "animals/mammals/aquatic/whale.ogg": {"Whale vocalization", "Wild animals"},
    "animals/mammals/rodents/mouse.ogg": {"Mouse", "Rodents, rats, mice", "Squeak"},
    "hobbies/music/string/violin.ogg": {"Violin, fiddle", "Bowed string instrument",
                                        "String section", "Pizzicato", "Musical instrument"},
    "hobbies/music/string/cello.ogg": {"Cello", "Bowed string instrument", "String section",
                                       "Musical instrument"},
    "hobbies/music/wind/bassoon.ogg": {"Wind instrument, woodwind instrument",
                                       "Musical instrument"},   # no bassoon class
    "hobbies/music/percussion/drumkit.ogg": {"Drum kit", "Drum", "Snare drum", "Bass drum",
                                             "Cymbal", "Hi-hat", "Drum roll", "Percussion"},
    "hobbies/music/percussion/cymbal_crash.ogg": {"Cymbal", "Percussion"},
    "hobbies/music/percussion/drum_tomtom_floor.ogg": {"Drum", "Bass drum", "Snare drum",
                                                       "Drum kit", "Percussion"},
    "household/vacuum_cleaner.ogg": {"Vacuum cleaner"},
    "household/toilet.ogg": {"Toilet flush"},
    "household/tools/hammer.ogg": {"Hammer", "Tools"},
    "household/tools/saw.ogg": {"Sawing", "Tools"},
    "seasonal/newyears/fireworks.ogg": {"Fireworks", "Firecracker", "Explosion", "Burst, pop"},
    "naturalforces/lightningbolt.ogg": {"Thunder", "Thunderstorm"},
    "vehicles/emergency/firetruck.ogg": {"Fire engine, fire truck (siren)", "Siren",
                                         "Emergency vehicle"},
    "hobbies/camera_35mm.ogg": {"Camera", "Single-lens reflex camera"},
    "household/dishes/glass.ogg": {"Glass", "Chink, clink"},
}
