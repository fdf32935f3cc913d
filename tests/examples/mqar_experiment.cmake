# examples/mqar_experiment on a tiny grid: one JSON line per run, every field there, finite
# accuracies in [0, 1], one parameter count for every schedule, the per-layer TransPoints each model
# stands for, and the same numbers again from a second run on one thread (a run is a function of
# its seed, whatever ran beside it).
#   cmake -DPROGRAM=... -DWORK=... -P this
file(REMOVE_RECURSE "${WORK}")
file(MAKE_DIRECTORY "${WORK}")
set(grid --lengths 16,24 --pairs 2 --seeds 1,2 --steps 4 --batch 2 --test-batches 1 --d-model 16 --layers 8
         --headdim 8 --d-state 8 --chunk 8 --vocab 16 --quiet)

function(run_grid out jobs)
  execute_process(COMMAND "${PROGRAM}" --out "${out}" ${grid} --jobs ${jobs}
                  RESULT_VARIABLE rc OUTPUT_VARIABLE stdout ERROR_VARIABLE stderr)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "mqar_experiment --jobs ${jobs} failed (${rc}):\n${stdout}\n${stderr}")
  endif()
endfunction()

# Reads the file into <prefix>_<model>_<L>_<seed> = "accuracy loss train_loss", checking each line.
function(read_runs file prefix)
  file(STRINGS "${file}" lines)
  list(LENGTH lines count)
  if(NOT count EQUAL 16)
    message(FATAL_ERROR "${file} has ${count} lines, expected 16 (4 models x 2 lengths x 2 seeds)")
  endif()
  set(params "")
  foreach(line IN LISTS lines)
    string(JSON err ERROR_VARIABLE bad GET "${line}" error)
    if(NOT bad)
      message(FATAL_ERROR "a run failed: ${line}")
    endif()
    foreach(key model seq_len pairs seed transpoints test_accuracy test_loss train_loss train_accuracy steps tokens
                train_seconds parameters chance)
      string(JSON v ERROR_VARIABLE bad GET "${line}" ${key})
      if(bad)
        message(FATAL_ERROR "the line '${line}' has no '${key}': ${bad}")
      endif()
      set(${key} "${v}")
    endforeach()
    foreach(key test_accuracy train_accuracy)
      # A finite number in [0, 1]: nlohmann writes NaN and infinities as null.
      if(NOT ${key} MATCHES "^(0(\\.[0-9]+)?([eE]-?[0-9]+)?|1(\\.0+)?)$")
        message(FATAL_ERROR "${key} = '${${key}}' is not a finite number in [0, 1]: ${line}")
      endif()
    endforeach()
    foreach(key test_loss train_loss train_seconds)
      if(NOT ${key} MATCHES "^[0-9]+(\\.[0-9]+)?([eE][-+]?[0-9]+)?$")
        message(FATAL_ERROR "${key} = '${${key}}' is not a finite non-negative number: ${line}")
      endif()
    endforeach()
    math(EXPR want_tokens "4 * 2 * ${seq_len}")
    if(NOT steps EQUAL 4 OR NOT tokens EQUAL want_tokens)
      message(FATAL_ERROR "steps ${steps} and tokens ${tokens}, expected 4 and ${want_tokens}: ${line}")
    endif()
    if(params STREQUAL "")
      set(params "${parameters}")
    elseif(NOT params EQUAL parameters)
      message(FATAL_ERROR "the parameter counts differ (${params} and ${parameters}): only the schedule may change")
    endif()
    string(JSON n LENGTH "${transpoints}")
    string(JSON p0 GET "${transpoints}" 0)
    string(JSON p7 GET "${transpoints}" 7)
    string(JSON p6 GET "${transpoints}" 6)
    math(EXPR quarter "${seq_len} / 4")
    math(EXPR half "${seq_len} / 2")
    if(NOT n EQUAL 8
       OR (model STREQUAL "mamba2" AND NOT (p0 EQUAL 0 AND p7 EQUAL 0))
       OR (model STREQUAL "transformer" AND NOT (p0 EQUAL seq_len AND p7 EQUAL seq_len))
       OR (model STREQUAL "transmamba-quarter" AND NOT (p0 EQUAL quarter AND p7 EQUAL quarter))
       OR (model STREQUAL "transmamba-v9" AND NOT (p0 EQUAL 0 AND p6 EQUAL half AND p7 EQUAL seq_len)))
      message(FATAL_ERROR "${model} at L ${seq_len} ran at TransPoints ${transpoints}")
    endif()
    set(${prefix}_${model}_${seq_len}_${seed} "${test_accuracy} ${test_loss} ${train_loss}" PARENT_SCOPE)
  endforeach()
endfunction()

run_grid("${WORK}/parallel.jsonl" 4)
read_runs("${WORK}/parallel.jsonl" a)
run_grid("${WORK}/serial.jsonl" 1)
read_runs("${WORK}/serial.jsonl" b)
foreach(model mamba2 transformer transmamba-v9 transmamba-quarter)
  foreach(L 16 24)
    foreach(seed 1 2)
      if(NOT a_${model}_${L}_${seed} STREQUAL b_${model}_${L}_${seed})
        message(FATAL_ERROR "${model} L ${L} seed ${seed}: '${a_${model}_${L}_${seed}}' beside other runs, "
                            "'${b_${model}_${L}_${seed}}' alone")
      endif()
    endforeach()
  endforeach()
endforeach()
if(a_mamba2_16_1 STREQUAL a_mamba2_16_2)
  message(FATAL_ERROR "seeds 1 and 2 gave the same run: ${a_mamba2_16_1}")
endif()

# A bad grid is refused before anything runs, naming what is wrong.
execute_process(COMMAND "${PROGRAM}" --out "${WORK}/bad.jsonl" --lengths 8 --pairs 4 --seeds 1 --quiet
                RESULT_VARIABLE rc ERROR_VARIABLE stderr)
if(rc EQUAL 0 OR NOT stderr MATCHES "cannot hold 4 pairs")
  message(FATAL_ERROR "a grid whose sequences cannot hold the pairs was not refused (${rc}): ${stderr}")
endif()

# A depth that is not a multiple of 8 takes V9's table spread over its layers: layer i of n takes
# entry floor(8 i / n), scaled by L / 8192.
execute_process(COMMAND "${PROGRAM}" --out "${WORK}/v9.jsonl" --lengths 64 --pairs 2 --seeds 1 --models transmamba-v9
                        --layers 4 --steps 1 --batch 1 --test-batches 1 --d-model 16 --headdim 8 --d-state 8 --quiet
                RESULT_VARIABLE rc ERROR_VARIABLE stderr)
file(READ "${WORK}/v9.jsonl" line)
string(JSON points GET "${line}" transpoints)
string(REGEX REPLACE "[ \n]" "" points "${points}")
if(NOT rc EQUAL 0 OR NOT points STREQUAL "[0,2,8,32]")
  message(FATAL_ERROR "V9 over 4 layers at L 64 ran at ${points}, expected [0,2,8,32] (${rc}): ${stderr}")
endif()
