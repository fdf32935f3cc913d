# The installed program as a user runs it: init, run, generate, and bad arguments / bad files that
# must give one line on stderr and a non-zero exit code.
#   cmake -DPROGRAM=... -DWORK=... -DDATA=tests/data [-DREADELF=...] [-DWITH_CUDA=ON|OFF] -P this
file(REMOVE_RECURSE "${WORK}")
file(MAKE_DIRECTORY "${WORK}")

include("${CMAKE_CURRENT_LIST_DIR}/expect.cmake")

# The last error also mentions `needle`.
function(expect_mentioned needle)
  string(FIND "${last_err}" "${needle}" found)
  if(found EQUAL -1)
    message(FATAL_ERROR "the error does not mention '${needle}':\n${last_err}")
  endif()
endfunction()

function(expect_absent path)
  if(EXISTS "${path}")
    message(FATAL_ERROR "'${path}' should not have been written")
  endif()
endfunction()

function(expect_same_file a b)
  file(SHA256 "${a}" ha)
  file(SHA256 "${b}" hb)
  if(NOT ha STREQUAL hb)
    message(FATAL_ERROR "'${a}' was changed")
  endif()
endfunction()

expect_ok("${PROGRAM}" init --out "${WORK}/model" --layers 2 --d-model 32 --vocab 30 --schedule 0,5)
expect_ok("${PROGRAM}" generate --model "${WORK}/model" --prompt-ids 1,2,3 --max-new-tokens 6 --no-progress)
string(REGEX MATCH "^[0-9]+(,[0-9]+)+" ids "${last_out}")
if(NOT ids)
  message(FATAL_ERROR "generate printed no ids: ${last_out}")
endif()
expect_ok("${PROGRAM}" generate --model "${WORK}/model" --prompt-ids 1,2,3 --max-new-tokens 6 --temperature 0.7
          --top-k 5 --top-p 0.9 --seed 4 --schedule 3,3 --no-progress)
expect_ok("${PROGRAM}" --help)
expect_ok("${PROGRAM}" run --help)

expect_error("--prompt-ids" "${PROGRAM}" generate --model "${WORK}/model" --prompt-ids 1,x)
expect_error("--model is required" "${PROGRAM}" generate --prompt-ids 1)
expect_error("does not exist" "${PROGRAM}" run --model "${WORK}/none" --input a --output b)
expect_error("excludes" "${PROGRAM}" run --model "${WORK}/model" --input a --output b --transpoint 1 --schedule 1,2)
expect_error("token id 99" "${PROGRAM}" generate --model "${WORK}/model" --prompt-ids 99 --no-progress)
file(WRITE "${WORK}/model/config.json" "{ not json")
expect_error("config.json" "${PROGRAM}" generate --model "${WORK}/model" --prompt-ids 1 --no-progress)
file(WRITE "${WORK}/junk.safetensors" "12345678")
expect_ok("${PROGRAM}" init --out "${WORK}/model2" --layers 1 --d-model 32 --vocab 30)
expect_error("junk.safetensors" "${PROGRAM}" run --model "${WORK}/model2" --input "${WORK}/junk.safetensors"
             --output "${WORK}/out.safetensors")

# ---------------------------------------------------------------------------
# Integer flags: decimal only, in range, no saturation; one line naming the flag, value and range.
# ---------------------------------------------------------------------------
set(model "${WORK}/model2")
set(gen "${PROGRAM}" generate --model "${model}" --no-progress)
expect_error("--max-new-tokens '9223372036854775807': out of range; expected a decimal integer in [0, 9223372036854775806]"
             ${gen} --prompt-ids 1 --max-new-tokens 9223372036854775807)
expect_error("--max-new-tokens '99999999999999999999': out of range; expected a decimal integer in [0, 9223372036854775807]"
             ${gen} --prompt-ids 1 --max-new-tokens 99999999999999999999)
expect_error("--max-new-tokens '0x10': not a decimal integer" ${gen} --prompt-ids 1 --max-new-tokens 0x10)
expect_error("--max-new-tokens '1e11': not a decimal integer" ${gen} --prompt-ids 1 --max-new-tokens 1e11)
expect_error("--max-new-tokens '-1': negative value" ${gen} --prompt-ids 1 --max-new-tokens -1)
expect_error("--seed '-1': negative value; expected a decimal integer in [0, 18446744073709551615]" ${gen} --prompt-ids 1 --seed -1)
expect_error("--seed '18446744073709551616': out of range" ${gen} --prompt-ids 1 --seed 18446744073709551616)
expect_error("--seed '0x1f'" ${gen} --prompt-ids 1 --seed 0x1f)
expect_error("--top-k '+3': not a decimal integer" ${gen} --prompt-ids 1 --top-k +3)
expect_error("--top-k '-2': negative value" ${gen} --prompt-ids 1 --top-k -2)
# An empty argument cannot travel through a CMake list (expect_error's ARGN): spelled out here.
execute_process(COMMAND "${PROGRAM}" generate --model "${model}" --no-progress --prompt-ids ""
                RESULT_VARIABLE rc ERROR_VARIABLE err)
if(rc EQUAL 0 OR NOT err MATCHES "--prompt-ids '': empty list")
  message(FATAL_ERROR "--prompt-ids \"\" was not refused as an empty list (${rc}):\n${err}")
endif()
expect_error("--prompt-ids '1,,3': item 2 is empty" ${gen} --prompt-ids 1,,3)
expect_error("--prompt-ids '1,': item 2 is empty" ${gen} --prompt-ids 1,)
# ',' is the flag's one value, not the start of a list that swallows the next flag.
expect_error("--prompt-ids ',': item 1 is empty" ${gen} --prompt-ids , --max-new-tokens 2)
expect_error("--prompt-ids '99999999999999999999': item 1 '99999999999999999999': out of range"
             ${gen} --prompt-ids 99999999999999999999)
expect_error("--prompt-ids '-1': item 1 '-1': negative value" ${gen} --prompt-ids -1)
expect_error("--prompt-ids '010,0x1': item 2 '0x1': not a decimal integer" ${gen} --prompt-ids 010,0x1)
expect_error("--transpoint '-1': negative value" ${gen} --prompt-ids 1 --transpoint -1)
expect_error("--schedule '1,-2': item 2 '-2': negative value" ${gen} --prompt-ids 1 --schedule 1,-2)
expect_error("--cyclic-schedule '1,,2': item 2 is empty" ${gen} --prompt-ids 1 --cyclic-schedule 1,,2)
expect_error("--threads '0': out of range; expected a decimal integer in [1, 4096]" ${gen} --prompt-ids 1 --threads 0)
expect_error("--threads '-1': negative value" ${gen} --prompt-ids 1 --threads -1)
expect_error("--threads '2x'" ${gen} --prompt-ids 1 --threads 2x)
foreach(flag --d-model --layers --headdim --d-state --ngroups --expand --vocab --chunk-size)
  expect_error("${flag} '0x20': not a decimal integer" "${PROGRAM}" init --out "${WORK}/never" ${flag} 0x20)
  expect_error("${flag} '0': out of range; expected a decimal integer in [1, 9223372036854775807]"
               "${PROGRAM}" init --out "${WORK}/never" ${flag} 0)
endforeach()
expect_error("--layers '99999999999999999999': out of range" "${PROGRAM}" init --out "${WORK}/never" --layers 99999999999999999999)
expect_error("--seed '-1': negative value" "${PROGRAM}" init --out "${WORK}/never" --seed -1)
expect_absent("${WORK}/never")
# Accepted at the edges of their ranges.
expect_ok(${gen} --prompt-ids 0,29 --max-new-tokens 2 --seed 18446744073709551615 --threads 1 --top-k 9223372036854775807
          --temperature 0.5)

# ---------------------------------------------------------------------------
# Sizes past memory are refused before allocating, naming the buffer, its bytes and the flag.
# ---------------------------------------------------------------------------
expect_error("the largest part is the embeddings" "${PROGRAM}" init --out "${WORK}/never" --vocab 2147483648 --d-model 16777216)
expect_mentioned("bytes")
expect_mentioned("set by --vocab and --d-model")
expect_error("the largest part is the layers' weights" "${PROGRAM}" init --out "${WORK}/never" --layers 65536 --d-model 65536)
expect_mentioned("set by --layers")
expect_error("the largest part is the KV cache for 4611686018427387905 tokens"
             ${gen} --prompt-ids 1 --max-new-tokens 4611686018427387904 --transpoint 4611686018427387904)
expect_mentioned("set by --max-new-tokens")
expect_error("generate needs" ${gen} --prompt-ids 1 --max-new-tokens 9223372036854775806 --cyclic-schedule 9223372036854775806)
expect_absent("${WORK}/never")

# ---------------------------------------------------------------------------
# init writes only what the loader reads: its limits, checked before anything is written.
# ---------------------------------------------------------------------------
expect_error("field 'num_hidden_layers' = 70000 is out of range [1, 65536] (set by --layers); nothing was written"
             "${PROGRAM}" init --out "${WORK}/never" --layers 70000)
expect_error("field 'vocab_size' = 3000000000 is out of range [1, 2147483648] (set by --vocab); nothing was written"
             "${PROGRAM}" init --out "${WORK}/never" --vocab 3000000000)
expect_error("field 'hidden_size'" "${PROGRAM}" init --out "${WORK}/never" --d-model 16777217)
expect_absent("${WORK}/never")

# ---------------------------------------------------------------------------
# --schedule is one TransPoint per layer in every command; --cyclic-schedule repeats a table.
# ---------------------------------------------------------------------------
expect_error("--schedule gives 2 TransPoints, but the model has 4 layers"
             "${PROGRAM}" init --out "${WORK}/never" --layers 4 --d-model 32 --vocab 30 --schedule 0,5)
expect_absent("${WORK}/never")
expect_ok("${PROGRAM}" init --out "${WORK}/cyclic" --layers 4 --d-model 32 --vocab 30 --cyclic-schedule 0,5)
file(READ "${WORK}/cyclic/config.json" config)
if(NOT config MATCHES "\"kind\": \"cyclic\"")
  message(FATAL_ERROR "init --cyclic-schedule wrote no cyclic schedule:\n${config}")
endif()
expect_ok("${PROGRAM}" generate --model "${WORK}/cyclic" --prompt-ids 1,2 --max-new-tokens 2 --no-progress --cyclic-schedule 3)
expect_error("--schedule gives 1 TransPoints, but the model has 4 layers"
             "${PROGRAM}" generate --model "${WORK}/cyclic" --prompt-ids 1 --no-progress --schedule 3)
expect_error("excludes" "${PROGRAM}" init --out "${WORK}/never" --schedule 1,2 --cyclic-schedule 1)
expect_ok("${PROGRAM}" init --help)
string(FIND "${last_out}" "--cyclic-schedule" found)
if(found EQUAL -1)
  message(FATAL_ERROR "init --help does not list --cyclic-schedule:\n${last_out}")
endif()

# ---------------------------------------------------------------------------
# Outputs are checked before any work.
# ---------------------------------------------------------------------------
# A Hugging Face checkpoint fixture and its input_ids (int64, 2 x 12), copied so that nothing in the
# source tree is at risk.
file(COPY "${DATA}/mamba2_g1_tied/" DESTINATION "${WORK}/hf")
file(RENAME "${WORK}/hf/expected.safetensors" "${WORK}/ids.safetensors")
set(ids "${WORK}/ids.safetensors")
set(hf "${WORK}/hf")
set(run "${PROGRAM}" run --model "${hf}" --input "${ids}")
expect_ok(${run} --output "${WORK}/logits.safetensors")
expect_ok(${run} --output "${WORK}/last.safetensors" --last --threads 1)
string(FIND "${last_out}" "logits (2 x 96)" found)
if(found EQUAL -1)
  message(FATAL_ERROR "run --last did not write (batch, vocab) logits: ${last_out}")
endif()

file(COPY "${ids}" DESTINATION "${WORK}/keep")
expect_error("--output '${ids}' is the --input file" ${run} --output "${ids}")
file(CREATE_LINK "${ids}" "${WORK}/ids_link.safetensors" SYMBOLIC)
expect_error("is the --input file" ${run} --output "${WORK}/ids_link.safetensors")
file(CREATE_LINK "${ids}" "${WORK}/ids_hard.safetensors")
expect_error("is the --input file" ${run} --output "${WORK}/ids_hard.safetensors")
expect_same_file("${ids}" "${WORK}/keep/ids.safetensors")
file(COPY "${hf}/model.safetensors" "${hf}/config.json" DESTINATION "${WORK}/keep_hf")
expect_error("is a file of the --model checkpoint" ${run} --output "${hf}/model.safetensors")
expect_error("is a file of the --model checkpoint" ${run} --output "${hf}/config.json")
expect_error("is a file of the --model checkpoint" ${run} --output "${hf}/../hf/model.safetensors")
expect_same_file("${hf}/model.safetensors" "${WORK}/keep_hf/model.safetensors")
expect_same_file("${hf}/config.json" "${WORK}/keep_hf/config.json")
expect_ok(${run} --output "${hf}/logits.safetensors")  # another file in the model's directory is fine
# A bad output is reported before the input is read: the junk input is never looked at.
expect_error("--output '${WORK}' is a directory, not a file"
             "${PROGRAM}" run --model "${model}" --input "${WORK}/junk.safetensors" --output "${WORK}")
expect_error("the directory '${WORK}/no_such_dir' does not exist"
             "${PROGRAM}" run --model "${model}" --input "${WORK}/junk.safetensors" --output "${WORK}/no_such_dir/out.safetensors")
execute_process(COMMAND id -u OUTPUT_VARIABLE uid OUTPUT_STRIP_TRAILING_WHITESPACE)
if(NOT uid STREQUAL "0")  # root writes anywhere
  file(MAKE_DIRECTORY "${WORK}/locked")
  file(CHMOD "${WORK}/locked" PERMISSIONS OWNER_READ OWNER_EXECUTE)
  expect_error("'${WORK}/locked' is not writable"
               "${PROGRAM}" run --model "${model}" --input "${WORK}/junk.safetensors" --output "${WORK}/locked/out.safetensors")
  file(CHMOD "${WORK}/locked" PERMISSIONS OWNER_READ OWNER_WRITE OWNER_EXECUTE)
endif()

# init replaces a checkpoint only with --force.
file(COPY "${model}/model.safetensors" DESTINATION "${WORK}/keep_model")
expect_error("already holds a checkpoint (config.json, model.safetensors): pass --force to replace it"
             "${PROGRAM}" init --out "${model}" --layers 1 --d-model 32 --vocab 30 --seed 7)
expect_same_file("${model}/model.safetensors" "${WORK}/keep_model/model.safetensors")
expect_error("exists and is not a directory" "${PROGRAM}" init --out "${ids}")
expect_ok("${PROGRAM}" init --out "${model}" --layers 1 --d-model 32 --vocab 30 --seed 7 --force)
expect_ok(${gen} --prompt-ids 1,2 --max-new-tokens 2)

# ---------------------------------------------------------------------------
# The CPU program links no CUDA library; --device cuda loads the GPU module or says plainly why not.
# ---------------------------------------------------------------------------
if(READELF)
  execute_process(COMMAND "${READELF}" -d "${PROGRAM}" OUTPUT_VARIABLE dynamic RESULT_VARIABLE readelf_rc)
  if(NOT readelf_rc EQUAL 0)
    message(FATAL_ERROR "readelf -d ${PROGRAM} failed")
  endif()
  string(REGEX MATCHALL "\\(NEEDED\\)[^\n]*" needed "${dynamic}")
  if(NOT needed)
    message(FATAL_ERROR "readelf -d ${PROGRAM} lists no NEEDED entries:\n${dynamic}")
  endif()
  foreach(entry IN LISTS needed)
    if(entry MATCHES "cuda|cublas|nvrtc|nvToolsExt")
      message(FATAL_ERROR "the CPU program links a CUDA library: ${entry}")
    endif()
  endforeach()
endif()
if(WITH_CUDA)
  execute_process(COMMAND ${gen} --prompt-ids 1 --max-new-tokens 2 --device cuda RESULT_VARIABLE rc ERROR_VARIABLE err)
  if(NOT rc EQUAL 0 AND NOT err MATCHES "no CUDA device")
    message(FATAL_ERROR "--device cuda failed without saying 'no CUDA device':\n${err}")
  endif()
else()
  expect_error("built without CUDA: --device cuda is not available" ${gen} --prompt-ids 1 --device cuda)
endif()
